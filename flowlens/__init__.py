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
from flowlens.core.layout import TokenLayout as TokenLayout
from flowlens.core.openpi_layout import pi0_layout as pi0_layout
from flowlens.core.openpi_layout import pi05_layout as pi05_layout
from flowlens.core.segments import TokenKind as TokenKind
from flowlens.errors import FlowlensError as FlowlensError
from flowlens.projection import frame_heatmap as frame_heatmap
from flowlens.projection import patch_grid as patch_grid
from flowlens.projection import word_scores as word_scores

# Heavier analyses load on first use (``flowlens.attention_flow`` compiles numba kernels).
_LAZY = {
    "attention_flow": "flowlens.analysis.flow", "attention_flow_fused": "flowlens.analysis.flow",
    "attention_flow_graph": "flowlens.analysis.flow", "FlowResult": "flowlens.analysis.flow",
    "head_stats": "flowlens.analysis.heads", "rank_heads": "flowlens.analysis.heads",
    "head_similarity": "flowlens.analysis.head_roles", "head_roles": "flowlens.analysis.head_roles",
    "head_grids": "flowlens.analysis.head_grids", "action_attention": "flowlens.analysis.actions",
    "action_rollout": "flowlens.analysis.actions", "summarize_actions": "flowlens.analysis.actions",
    "rollout_all_steps": "flowlens.analysis.step_rollout", "step_report": "flowlens.analysis.steps",
    "step_evolution": "flowlens.analysis.steps", "by_step": "flowlens.analysis.steps",
    "save_capture": "flowlens.io.capture_file", "load_capture": "flowlens.io.capture_file",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flowlens' has no attribute {name!r}")


try:
    __version__ = version("flowlens")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"

__all__ = [
    "AttentionPass", "Capture", "FlowlensError", "FrameTransform", "PassKind", "Rollout", "TokenGraph",
    "TokenKind", "TokenLayout", "attention_rollout", "frame_heatmap", "make_capture", "patch_grid",
    "pi0_layout", "pi05_layout", "rollout", "word_scores", *_LAZY,
]
