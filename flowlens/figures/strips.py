"""Strips and grids of small camera heatmaps on one shared colour scale.

One colour scale for every panel is the point: it makes "layer 3 vs layer 15" or "head 2 vs head 5"
comparable at a glance. Used for rollout across all 18 layers (``layer_strip``), maps per denoising
step (``flowlens.figures.steps.step_strip``) and the layers × heads grid
(``flowlens.figures.heads.head_grid``).

    fig = layer_strip(scores [layer, token], layout, camera="base_0_rgb", image=frame)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError
from flowlens.figures._common import add_colorbar, check_scores, layer_ids_for, limits, new_figure
from flowlens.figures.image import image_overlay
from flowlens.projection import camera_segment, patch_grid


def map_panels(
    scores: np.ndarray,
    layout: TokenLayout,
    *,
    camera: str | int = 0,
    image: np.ndarray | None = None,
    nrows: int,
    ncols: int,
    titles: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    on: str = "model",
    cmap: str = "inferno",
    alpha: float = 0.55,
    vmin: float | None = None,
    vmax: float | None = None,
    smooth: bool = True,
    value_label: str = "attention mass",
    suptitle: str | None = None,
    panel_size: float = 1.45,
    fig=None,
    scale: str = "shared",
):
    """Panels of one camera's heatmap laid out ``nrows × ncols`` with one shared colorbar.

    Args:
      scores: float [panel, token], panels in row-major order (fewer than nrows·ncols leaves blanks).
      titles: one title per panel (or None); row_labels / col_labels label the grid's edges instead.
      scale: "shared" (one colour scale, vmin/vmax) or "panel": each panel from 0 to its own
        maximum, written under the panel; the colorbar then runs 0 … "each panel's max".
    Returns:
      (fig, axes [nrows, ncols]); unused axes are hidden. ``fig._flowlens_colorbar`` is the colorbar.
    """
    scores = check_scores(scores, layout, ("panel", "token"))
    seg = camera_segment(layout, camera)
    grids = patch_grid(scores, layout, seg.name)
    if scores.shape[0] > nrows * ncols:
        raise FlowlensError(f"{scores.shape[0]} panels do not fit a {nrows}×{ncols} grid.")
    if scale not in ("shared", "panel"):
        raise FlowlensError(f"scale must be 'shared' or 'panel', got {scale!r}.")
    lo, hi = limits(grids, vmin, vmax)
    own = [limits(g) for g in grids] if scale == "panel" else [(lo, hi)] * grids.shape[0]
    if fig is None:
        fig = new_figure((ncols * panel_size + 1.0, nrows * panel_size + (0.7 if suptitle else 0.3)))
    axes = np.atleast_2d(np.asarray(fig.subplots(nrows, ncols, squeeze=False)))
    for i, ax in enumerate(axes.flat):
        if i >= grids.shape[0]:
            ax.set_axis_off()
            continue
        image_overlay(
            grids[i],
            seg,
            image=image,
            on=on,
            ax=ax,
            cmap=cmap,
            alpha=alpha,
            vmin=own[i][0],
            vmax=own[i][1],
            smooth=smooth,
            colorbar=False,
            title=titles[i] if titles is not None else "",
        )
        ax.title.set_fontsize(8)
        if scale == "panel":
            ax.set_xlabel(f"max {own[i][1]:.2g}", fontsize=7, labelpad=1)
    if row_labels is not None:
        for r, lab in enumerate(row_labels):
            axes[r, 0].set_ylabel(lab, fontsize=8)
    if col_labels is not None:
        for c, lab in enumerate(col_labels):
            axes[0, c].set_title(lab, fontsize=8)
    im = axes.flat[0].images[-1]
    if scale == "panel":
        import matplotlib.cm as cm
        import matplotlib.colors as mcolors

        im = cm.ScalarMappable(mcolors.Normalize(0.0, 1.0), cmap)
        value_label = f"{value_label}: 0 … each panel's own max (under it)"
    cb = add_colorbar(axes.flat[0], im, value_label, axes=axes.ravel().tolist())
    if scale == "panel":
        cb.set_ticks([0.0, 1.0], labels=["0", "max"])
    else:
        cb.ax.set_title(f"max {hi:.3g}", fontsize=7)
    fig._flowlens_colorbar = cb
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig, axes


def layer_strip(
    scores: np.ndarray,
    layout: TokenLayout,
    *,
    camera: str | int = 0,
    image: np.ndarray | None = None,
    layer_ids: Sequence[int] | None = None,
    ncols: int | None = None,
    title: str | None = None,
    **kwargs,
):
    """Heatmaps of one camera after every layer (e.g. rollout across all 18 layers), shared colour scale.

    Args:
      scores: float [layer, token] (e.g. ``np.stack([r.token_scores(l) for l in r.layers])``).
      layer_ids: model layer id per row (titles "layer l").
      ncols: panels per row (default: 9 for 18 layers, i.e. two rows).
      title: figure title (e.g. ``FigureConfig.title()``).
      **kwargs: passed to ``map_panels`` (on, cmap, alpha, vmin, vmax, value_label, panel_size).
    Returns:
      The figure (its axes: one per layer, titled "layer l").
    """
    scores = check_scores(scores, layout, ("layer", "token"))
    ids = layer_ids_for(scores.shape[0], layer_ids)
    ncols = ncols or min(len(ids), 9)
    nrows = int(np.ceil(len(ids) / ncols))
    fig, _ = map_panels(
        scores,
        layout,
        camera=camera,
        image=image,
        nrows=nrows,
        ncols=ncols,
        titles=[f"layer {i}" for i in ids],
        suptitle=title,
        **kwargs,
    )
    return fig
