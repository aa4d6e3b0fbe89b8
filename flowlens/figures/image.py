"""Image overlays: a camera's patch scores as a heatmap over the frame (or the model's input).

The model saw each camera as a letterboxed, possibly 180°-rotated 224×224 image cut into a
16×16 grid of 14-px patches. ``on="frame"`` undoes that (via ``flowlens.projection.frame_heatmap``)
so the heatmap lies on the frame the user knows; ``on="model"`` shows the model's input with one
flat block per patch, which is what the scores literally refer to.

    camera_overlay(scores [token], layout, camera, image=frame)      # from token scores
    image_overlay(grid [rows, cols], segment, image=frame)            # from a grid
"""

from __future__ import annotations

import dataclasses

import numpy as np

from flowlens.core.frame import FrameTransform
from flowlens.core.layout import TokenLayout
from flowlens.core.segments import ImageSegment
from flowlens.errors import FlowlensError, unknown_name_error
from flowlens.figures._common import (
    add_colorbar,
    check_image,
    check_scores,
    get_ax,
    limits,
    model_input_image,
)
from flowlens.projection import camera_segment, frame_heatmap, model_heatmap, patch_grid

TARGETS = ("frame", "model")


def image_overlay(
    grid: np.ndarray,
    segment: ImageSegment,
    *,
    image: np.ndarray | None = None,
    on: str = "frame",
    ax=None,
    cmap: str = "inferno",
    alpha: float = 0.55,
    vmin: float | None = None,
    vmax: float | None = None,
    smooth: bool = True,
    show_patch_grid: bool = False,
    colorbar: bool = True,
    cbar_label: str | None = "attention mass",
    title: str | None = None,
):
    """Draw a camera's patch grid as a heatmap over its frame.

    Args:
      grid: float [rows, cols] scores of the camera's patches (NaN = removed token).
      segment: the camera's ImageSegment (grid shape, patch size, frame transform).
      image: uint8 [H, W, 3] original frame (as the user has it); None draws the heatmap alone.
      on: "frame" (the original frame; letterbox and rotation undone) or "model" (the model input).
      ax: axes to draw into (None: a new figure).
      cmap, alpha: heatmap colormap and opacity over the image (alpha is 1 without an image).
      vmin, vmax: colour limits (default 0 … max of the grid).
      smooth: bilinear heatmap between patch centres on the frame (model view is always blocky).
      show_patch_grid: draw the patch boundaries.
      colorbar: add a colorbar labelled ``cbar_label``.
      title: axes title (default: the camera name; "(masked)" for a masked camera).
    Returns:
      The axes: ``ax.images`` holds the frame (if any) then the heatmap.
    """
    if on not in TARGETS:
        raise unknown_name_error("on", on, TARGETS)
    grid = np.asarray(grid, dtype=np.float64)
    if grid.shape != tuple(segment.grid):
        raise FlowlensError(
            f"grid must be {tuple(segment.grid)} (rows, cols) for camera {segment.name!r}, got {grid.shape}. "
            "Use camera_overlay(scores, layout, camera) to start from token scores."
        )
    ax = get_ax(ax)
    lo, hi = limits(grid, vmin, vmax)
    tf = segment.transform
    if on == "frame":
        fh, fw = tf.frame_size
        if image is not None:
            image = check_image(image)
            if image.shape[:2] != (fh, fw):
                # The frame the user passes wins; rescale the transform to its size.
                tf = FrameTransform(image.shape[:2], tf.model_size, tf.rotate180)
                segment = dataclasses.replace(segment, transform=tf)
                fh, fw = tf.frame_size
        heat = frame_heatmap(grid, segment, smooth=smooth)
        if np.isnan(grid).all():
            heat = np.full_like(heat, np.nan)
        shown = image
    else:
        fh, fw = tf.model_size
        heat = model_heatmap(grid, segment)
        shown = model_input_image(image, tf) if image is not None else None
    extent = (0, fw, fh, 0)
    if shown is not None:
        ax.imshow(shown, extent=extent, interpolation="bilinear")
    im = ax.imshow(
        heat,
        extent=extent,
        cmap=cmap,
        vmin=lo,
        vmax=hi,
        alpha=alpha if shown is not None else 1.0,
        interpolation="nearest" if on == "model" or not smooth else "bilinear",
    )
    if show_patch_grid:
        _draw_patch_grid(ax, segment, on)
    ax.set_xlim(0, fw)
    ax.set_ylim(fh, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    masked = not segment.valid or np.isnan(grid).all()
    if masked:
        ax.text(
            0.5,
            0.5,
            "camera masked\n(no valid patches)",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=9,
            color="white",
            bbox={"facecolor": "black", "alpha": 0.6},
        )
    ax.set_title(title if title is not None else segment.name + (" (masked)" if masked else ""), fontsize=10)
    if colorbar:
        add_colorbar(ax, im, cbar_label)
    return ax


def _draw_patch_grid(ax, segment: ImageSegment, on: str) -> None:
    rows, cols = segment.grid
    p = segment.patch_size
    style = {"color": "white", "lw": 0.4, "alpha": 0.5}
    if on == "model":
        for r in range(rows + 1):
            ax.plot([0, cols * p], [r * p, r * p], **style)
        for c in range(cols + 1):
            ax.plot([c * p, c * p], [0, rows * p], **style)
        return
    tf = segment.transform
    fh, fw = tf.frame_size
    rr, _ = tf.model_to_frame(np.arange(rows + 1) * p, np.zeros(rows + 1))
    _, cc = tf.model_to_frame(np.zeros(cols + 1), np.arange(cols + 1) * p)
    for r in np.clip(rr, 0, fh):
        ax.plot([0, fw], [r, r], **style)
    for c in np.clip(cc, 0, fw):
        ax.plot([c, c], [0, fh], **style)


def camera_overlay(
    scores: np.ndarray,
    layout: TokenLayout,
    camera: str | int = 0,
    *,
    image: np.ndarray | None = None,
    **kwargs,
):
    """``image_overlay`` of one camera from token scores.

    Args:
      scores: float [token] over the layout (NaN at removed tokens).
      layout: the TokenLayout the scores index.
      camera: camera name or index among ``layout.cameras``.
      image: uint8 [H, W, 3] frame of that camera.
      **kwargs: passed to ``image_overlay`` (on, ax, cmap, alpha, vmin, vmax, title, ...).
    Returns:
      The axes.
    """
    scores = check_scores(scores, layout, ("token",))
    seg = camera_segment(layout, camera)
    return image_overlay(patch_grid(scores, layout, seg.name), seg, image=image, **kwargs)
