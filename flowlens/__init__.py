"""flowlens: how information flows through vision-language-action policies (Pi0 / Pi0.5).

Data flows one way: model → Capture (+ TokenLayout) → TokenGraph → analyses (rollout, flow,
heads, actions, routing) → projection (frames, words) → figures / report / CLI.

The top level holds the everyday surface, one vocabulary throughout (``query=`` for the query
tokens — indices or a name like "action:0" / "actions" / "state" —, ``heads=`` for head fusion):
records (``Capture``, ``TokenLayout``, ``TokenGraph``, ``FrameTransform``, ``FlowlensError``), the
two relevance methods on a graph (``rollout``, ``flow``) and on bare arrays (``attention_rollout``,
``attention_flow``), projection (``patch_grid``, ``frame_heatmap``, ``word_scores``) and capture
files (``load_capture``, ``save_capture``). Everything else lives in its subpackage:
``flowlens.core`` (passes, layouts, queries), ``flowlens.analysis`` (heads, actions, steps),
``flowlens.io``, ``flowlens.projection``, ``flowlens.figures``, ``flowlens.model``,
``flowlens.pipeline``, ``flowlens.report``.

``import flowlens`` loads only the numpy core; JAX/Flax, numba and matplotlib load when a name
that needs them is first used.
"""

from importlib.metadata import PackageNotFoundError, version

from flowlens._lazy import lazy_getattr
from flowlens.analysis.rollout import attention_rollout as attention_rollout
from flowlens.analysis.rollout import rollout as rollout
from flowlens.core.capture import Capture as Capture
from flowlens.core.frame import FrameTransform as FrameTransform
from flowlens.core.graph import TokenGraph as TokenGraph
from flowlens.core.layout import TokenLayout as TokenLayout
from flowlens.errors import FlowlensError as FlowlensError
from flowlens.projection import frame_heatmap as frame_heatmap
from flowlens.projection import patch_grid as patch_grid
from flowlens.projection import word_scores as word_scores

# Loaded on first use: attention flow compiles numba kernels; capture files live in flowlens.io.
_LAZY = {
    "flow": "flowlens.analysis.flow", "attention_flow": "flowlens.analysis.flow",
    "load_capture": "flowlens.io.capture_file", "save_capture": "flowlens.io.capture_file",
}


__getattr__ = lazy_getattr("flowlens", _LAZY, globals())

try:
    __version__ = version("flowlens")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"

__all__ = [
    "Capture", "FlowlensError", "FrameTransform", "TokenGraph", "TokenLayout", "attention_flow",
    "attention_rollout", "flow", "frame_heatmap", "load_capture", "patch_grid", "rollout",
    "save_capture", "word_scores",
]
