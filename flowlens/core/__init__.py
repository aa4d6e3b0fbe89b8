"""Core records: token layout, query selections, capture, token graph, frame transform (numpy only)."""

from flowlens.core.capture import AttentionPass as AttentionPass
from flowlens.core.capture import Capture as Capture
from flowlens.core.capture import PassKind as PassKind
from flowlens.core.capture import make_capture as make_capture
from flowlens.core.frame import FrameTransform as FrameTransform
from flowlens.core.gradients import AttentionGradients as AttentionGradients
from flowlens.core.gradients import PathGradients as PathGradients
from flowlens.core.graph import HEAD_FUSIONS as HEAD_FUSIONS
from flowlens.core.graph import TokenGraph as TokenGraph
from flowlens.core.graph import fuse_heads as fuse_heads
from flowlens.core.segments import TokenKind as TokenKind
from flowlens.core.layout import TokenLayout as TokenLayout
from flowlens.core.openpi_layout import pi0_layout as pi0_layout
from flowlens.core.openpi_layout import pi05_layout as pi05_layout
from flowlens.core.query import QUERY_FORMS as QUERY_FORMS
from flowlens.core.query import parse_query as parse_query
from flowlens.core.query import select_query as select_query

__all__ = [
    "HEAD_FUSIONS", "QUERY_FORMS", "AttentionGradients", "AttentionPass", "Capture", "FrameTransform", "PassKind",
    "PathGradients", "TokenGraph", "TokenKind", "TokenLayout", "fuse_heads", "make_capture", "parse_query", "pi0_layout", "pi05_layout",
    "select_query",
]
