"""Image projection: scores on a camera's patch tokens → heatmaps on the model input and the frame.

The model saw a letterboxed (resize-with-pad), possibly 180°-rotated 224×224 image cut into a
grid of patches. ``patch_grid`` (from ``flowlens.core.patches``) reads a camera's token scores as
``[rows, cols]``;
``model_heatmap`` paints them on the model input; ``frame_heatmap`` undoes the letterbox and the
rotation (bilinear between patch centres) so the map lies on the original frame the user knows,
and letterbox-padding patches fall outside it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from flowlens.core.checks import check_flag, check_type, real_array
from flowlens.core.patches import camera_segment, patch_grid
from flowlens.core.segments import ImageSegment
from flowlens.errors import FlowlensError

__all__ = ["camera_segment", "frame_heatmap", "model_heatmap", "patch_grid"]


def model_heatmap(grid: np.ndarray, segment: ImageSegment) -> np.ndarray:
    """Paint a [rows, cols] grid on the model input: float64 [H_model, W_model], each patch a block."""
    p = segment.patch_size
    heat = np.kron(np.asarray(grid, dtype=np.float64), np.ones((p, p)))
    mh, mw = segment.transform.model_size
    out = np.full((mh, mw), np.nan)
    h, w = min(mh, heat.shape[0]), min(mw, heat.shape[1])
    out[:h, :w] = heat[:h, :w]
    return out


def frame_heatmap(grid: np.ndarray, segment: ImageSegment, *, smooth: bool = True) -> np.ndarray:
    """Project a [rows, cols] grid onto the original frame: float64 [H_frame, W_frame].

    Each frame pixel is mapped into the model input through the segment's FrameTransform (rotation
    and letterbox undone), then the grid is sampled there: bilinear between patch centres when
    ``smooth`` (default), else the value of the patch containing it.
    """
    check_type("segment", segment, ImageSegment, "Get one with flowlens.core.camera_segment(layout, camera).")
    smooth = check_flag("smooth", smooth)
    grid = real_array("grid", grid, ndim=2, shape_hint="[rows, cols]").astype(np.float64)
    if grid.shape != tuple(segment.grid):
        raise FlowlensError(f"grid must be {tuple(segment.grid)} for camera {segment.name!r}, got {grid.shape}.")
    fh, fw = segment.transform.frame_size
    rr, cc = np.meshgrid(np.arange(fh) + 0.5, np.arange(fw) + 0.5, indexing="ij")
    mr, mc = segment.transform.frame_to_model(rr, cc)
    p = segment.patch_size
    filled = np.where(np.isnan(grid), 0.0, grid)
    if smooth:
        coords = np.stack([mr / p - 0.5, mc / p - 0.5])
        return ndimage.map_coordinates(filled, coords, order=1, mode="nearest")
    r = np.clip((mr // p).astype(int), 0, grid.shape[0] - 1)
    c = np.clip((mc // p).astype(int), 0, grid.shape[1] - 1)
    return filled[r, c]
