"""Success vs failure, side by side: the same prompt, the same frame index, one colour scale.

Top row: the chosen camera's heatmap for the successful episode, for the failed one, and their
difference (success − failure, diverging colormap centred at 0) on the model input. Bottom row:
paired word bars (sinks apart). Titles carry the frame index and the outcome, so the figure cannot
be misread as two frames of one episode.

    fig = compare_outcomes(success [token], failure [token], layout,
                           images=(frame_s, frame_f), frame_index=40)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError
from flowlens.figures._common import check_scores, limits, new_figure
from flowlens.figures.image import image_overlay
from flowlens.figures.text import word_table
from flowlens.projection import camera_segment, patch_grid


def compare_outcomes(
    success: np.ndarray,
    failure: np.ndarray,
    layout: TokenLayout,
    *,
    failure_layout: TokenLayout | None = None,
    images: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
    camera: str | int = 0,
    frame_index: int | None = None,
    labels: Sequence[str] = ("success", "failure"),
    on: str = "frame",
    cmap: str = "inferno",
    diverging_cmap: str = "RdBu_r",
    alpha: float = 0.55,
    value_label: str = "attention mass",
    title: str | None = None,
    smooth: bool = True,
):
    """Compare two episodes' scores (same prompt, same frame index) side by side.

    Args:
      success, failure: float [token] scores of each episode's frame.
      layout: layout of the success frame; ``failure_layout`` that of the failure (default: same).
        Both must have the same words and the same camera grid.
      images: (success frame, failure frame), uint8 [H, W, 3] of ``camera`` (either may be None).
      camera: camera name or index.
      frame_index: frame index shared by both (in titles).
      labels: names of the two outcomes.
      smooth: bilinear heatmaps between patch centres (False: one flat block per patch).
    Returns:
      The figure: axes 0–2 are success / failure / difference maps, axis 3 the paired word bars.
    """
    failure_layout = failure_layout or layout
    s = check_scores(success, layout, ("token",), "success")
    f = check_scores(failure, failure_layout, ("token",), "failure")
    seg_s = camera_segment(layout, camera)
    seg_f = camera_segment(failure_layout, seg_s.name)
    if tuple(seg_s.grid) != tuple(seg_f.grid):
        raise FlowlensError(
            f"camera {seg_s.name!r} has grid {seg_s.grid} in the success layout but {seg_f.grid} "
            "in the failure layout; compare episodes of the same model."
        )
    words_s, vals_s, sinks, sv_s = word_table(s, layout)
    words_f, vals_f, _, sv_f = word_table(f, failure_layout)
    if words_s != words_f:
        raise FlowlensError(
            f"success and failure must share the prompt to compare word by word; "
            f"got {words_s} and {words_f}. "
            "Pick episodes of the same task."
        )
    gs, gf = patch_grid(s, layout, seg_s.name), patch_grid(f, failure_layout, seg_f.name)
    lo, hi = limits(np.concatenate([gs.ravel(), gf.ravel()]))
    fig = new_figure((12.0, 7.2))
    spec = fig.add_gridspec(2, 3, height_ratios=[1.35, 1.0])
    at = f"frame {frame_index}" if frame_index is not None else "same frame"
    ax_s, ax_f, ax_d = (fig.add_subplot(spec[0, i]) for i in range(3))
    image_overlay(
        gs,
        seg_s,
        image=images[0],
        on=on,
        ax=ax_s,
        cmap=cmap,
        alpha=alpha,
        vmin=lo,
        vmax=hi,
        colorbar=False,
        smooth=smooth,
        title=f"{labels[0]} · {at}",
    )
    image_overlay(
        gf,
        seg_f,
        image=images[1],
        on=on,
        ax=ax_f,
        cmap=cmap,
        alpha=alpha,
        vmin=lo,
        vmax=hi,
        colorbar=True,
        cbar_label=value_label,
        smooth=smooth,
        title=f"{labels[1]} · {at}",
    )
    diff = gs - gf
    m = limits(np.abs(diff))[1]
    image_overlay(
        diff,
        seg_s,
        image=images[0],
        on=on,
        ax=ax_d,
        cmap=diverging_cmap,
        vmin=-m,
        vmax=m,
        colorbar=True,
        cbar_label=f"{labels[0]} − {labels[1]}",
        smooth=smooth,
        title=f"difference ({labels[0]} − {labels[1]})",
    )
    ax_w = fig.add_subplot(spec[1, :])
    x = np.arange(len(words_s), dtype=float)
    sx = len(words_s) + 0.6 + np.arange(len(sinks))
    w = 0.4
    ax_w.bar(x - w / 2, vals_s, w, color="#2b8cbe", label=labels[0])
    ax_w.bar(x + w / 2, vals_f, w, color="#e6550d", label=labels[1])
    top = limits(np.concatenate([vals_s, vals_f, np.ravel(sv_s), np.ravel(sv_f)]))[1]
    ax_w.set_ylim(0, top * 1.18)
    if sinks:  # the same axis as the words: a sink bar is as tall as its mass, hatched, value written on it
        for xs, vals, color in ((sx - w / 2, sv_s, "#2b8cbe"), (sx + w / 2, sv_f, "#e6550d")):
            bars = ax_w.bar(xs, vals, w, color=color, hatch="//", edgecolor="white")
            ax_w.bar_label(bars, labels=[f"{v:.3f}" for v in np.nan_to_num(vals)], fontsize=7, padding=1)
        ax_w.axvline(len(words_s) - 0.2, color="0.3", lw=0.8, ls="--")
        ax_w.text(
            len(words_s) - 0.1,
            0.98,
            "sinks",
            transform=ax_w.get_xaxis_transform(),
            fontsize=8,
            va="top",
            color="0.3",
        )
    ax_w.set_xticks(np.concatenate([x, sx]))
    ax_w.set_xticklabels(
        list(words_s) + sinks,
        rotation=45 if len(words_s) > 8 else 0,
        ha="right" if len(words_s) > 8 else "center",
    )
    ax_w.set_xlim(-0.6, (sx[-1] if sinks else x[-1]) + 0.6)
    ax_w.set_ylabel(value_label)
    ax_w.legend(frameon=False, fontsize=8, loc="upper left")
    ax_w.spines[["top"]].set_visible(False)
    ax_w.set_title("prompt words; sinks hatched, on the same axis", fontsize=10)
    fig.suptitle(title or f"{labels[0]} vs {labels[1]} · {at} · camera {seg_s.name}", fontsize=11)
    return fig
