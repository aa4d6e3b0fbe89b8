"""flowlens: how information flows through vision-language-action policies (Pi0 / Pi0.5).

Data flows one way: model → Capture (+ TokenLayout) → TokenGraph → analyses (rollout, flow,
heads, actions, routing) → projection (frames, words) → figures / report / CLI.

``import flowlens`` loads only the numpy core; the model (JAX/Flax), figures (matplotlib) and
I/O modules are imported from their subpackages (``flowlens.model``, ``flowlens.figures``, ...).
"""

from importlib.metadata import PackageNotFoundError, version

from flowlens.analysis.rollout import Rollout as Rollout
from flowlens.analysis.rollout import attention_rollout as attention_rollout
from flowlens.analysis.rollout import rollout as rollout
from flowlens.core.capture import AttentionPass as AttentionPass
from flowlens.core.capture import Capture as Capture
from flowlens.core.capture import PassKind as PassKind
from flowlens.core.capture import make_capture as make_capture
from flowlens.core.frame import FrameTransform as FrameTransform
from flowlens.core.graph import TokenGraph as TokenGraph
from flowlens.core.layout import TokenKind as TokenKind
from flowlens.core.layout import TokenLayout as TokenLayout
from flowlens.core.layout import pi0_layout as pi0_layout
from flowlens.core.layout import pi05_layout as pi05_layout
from flowlens.errors import FlowlensError as FlowlensError
from flowlens.projection import frame_heatmap as frame_heatmap
from flowlens.projection import patch_grid as patch_grid
from flowlens.projection import word_scores as word_scores

try:
    __version__ = version("flowlens")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"

__all__ = [
    "AttentionPass", "Capture", "FlowlensError", "FrameTransform", "PassKind", "Rollout", "TokenGraph",
    "TokenKind", "TokenLayout", "attention_rollout", "frame_heatmap", "make_capture", "patch_grid",
    "pi0_layout", "pi05_layout", "rollout", "word_scores",
]
