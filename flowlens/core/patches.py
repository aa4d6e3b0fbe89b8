"""Camera patch grids: a camera's image segment in a layout, and token scores laid out as its grid.

SigLIP flattens each camera's patches row-major, so a camera's tokens ``[start, stop)`` reshape to
its ``[rows, cols]`` grid. This is a fact of the layout, used by analyses (per-head patch maps) and
by projection (heatmaps on frames) alike, so it lives in ``core``.

    >>> import numpy as np
    >>> from flowlens.testing import toy_layout
    >>> layout = toy_layout()
    >>> seg = camera_segment(layout, 0)
    >>> patch_grid(np.arange(layout.n, dtype=float), layout, seg.name).shape == tuple(seg.grid)
    True
"""

from __future__ import annotations

import numpy as np

from flowlens.core.checks import check_type, real_array
from flowlens.core.layout import TokenLayout
from flowlens.core.segments import ImageSegment
from flowlens.errors import FlowlensError, unknown_name_error

__all__ = ["camera_segment", "patch_grid"]


def camera_segment(layout: TokenLayout, camera: str | int = 0) -> ImageSegment:
    """The image segment of ``camera`` (name, or index among the layout's cameras)."""
    cams = layout.cameras
    if isinstance(camera, (int, np.integer)) and not isinstance(camera, (bool, np.bool_)):
        if not 0 <= camera < len(cams):
            raise FlowlensError(
                f"camera {camera} out of range: this layout has {len(cams)} cameras "
                f"{[c.name for c in cams]} (0–{len(cams) - 1})."
            )
        return cams[int(camera)]
    if not isinstance(camera, str):
        raise FlowlensError(
            f"camera must be a camera name {[c.name for c in cams]} or an index, got {camera!r} "
            f"({type(camera).__name__})."
        )
    for seg in cams:
        if seg.name == camera:
            return seg
    raise unknown_name_error("camera", camera, [c.name for c in cams])


def patch_grid(scores: np.ndarray, layout: TokenLayout, camera: str | int = 0) -> np.ndarray:
    """A camera's token scores as a grid.

    Args:
      scores: float [..., token] over the whole layout (NaN where a token was removed).
      camera: camera name or index.
    Returns:
      float64 [..., rows, cols], row-major as SigLIP flattens patches.
    """
    check_type("layout", layout, TokenLayout)
    scores = real_array("scores", scores, shape_hint="[..., token]").astype(np.float64)
    if scores.ndim == 0 or scores.shape[-1] != layout.n:
        raise FlowlensError(
            f"scores must have one value per token ({layout.n}) on the last axis, got shape {scores.shape}."
        )
    seg = camera_segment(layout, camera)
    return scores[..., seg.start:seg.stop].reshape(scores.shape[:-1] + tuple(seg.grid))
