"""Success vs failure, side by side: the same prompt, the same frame index, one colour scale.

One row per camera (every camera both runs saw, or the one asked for): the heatmap of the successful
episode, of the failed one, and their difference (success − failure, diverging colormap with
symmetric limits) over the frame; one colour scale for all heatmaps, one for all differences; cameras
either run lacks are named under the figure. Bottom row:
paired word bars (sinks apart). Titles carry the frame index and the outcome, so the figure cannot
be misread as two frames of one episode.

    fig = compare_outcomes(success [token], failure [token], layout,
                           images=(frames_s, frames_f), camera=None, frame_index=40)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError
from flowlens.figures._common import check_scores, limits, new_figure, short_camera
from flowlens.figures.image import image_overlay
from flowlens.figures.text import word_table
from flowlens.projection import camera_segment, patch_grid


def _camera_names(camera, layout: TokenLayout, failure_layout: TokenLayout) -> tuple[list[str], list[str]]:
    """(cameras to draw, cameras left out because either episode lacks them) for ``camera`` = a name or
    index (one camera) or None / a sequence (every camera valid in both runs, or those listed)."""
    if isinstance(camera, (str, int, np.integer)):
        return [camera_segment(layout, camera).name], []
    wanted = [c.name for c in layout.cameras] if camera is None else [camera_segment(layout, c).name for c in camera]
    valid_f = {c.name for c in failure_layout.cameras if c.valid}
    drawn = [n for n in wanted if camera_segment(layout, n).valid and n in valid_f]
    if not drawn:
        raise FlowlensError(
            f"camera must name a camera valid in both runs; got {camera!r}, and no camera among {wanted} "
            "has an image in both the success and the failure layout. Pass runs that share a camera."
        )
    return drawn, [n for n in wanted if n not in drawn]


def _image_of(image, name: str):
    """The frame of camera ``name`` from an array (one camera), a {camera: frame} mapping or None."""
    return image.get(name) if isinstance(image, Mapping) else image


def compare_outcomes(
    success: np.ndarray,
    failure: np.ndarray,
    layout: TokenLayout,
    *,
    failure_layout: TokenLayout | None = None,
    images: tuple = (None, None),
    camera: str | int | Sequence[str | int] | None = 0,
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
    """Compare two episodes' scores (same prompt, same frame index) side by side, one row per camera.

    Args:
      success, failure: float [token] scores of each episode's frame.
      layout: layout of the success frame; ``failure_layout`` that of the failure (default: same).
        Both must have the same words and the same camera grids.
      images: (success frame, failure frame): each a uint8 [H, W, 3] of ``camera`` (one camera), a
        {camera name: uint8 [H, W, 3]} mapping, or None.
      camera: camera name or index (one row); None: every camera valid in both runs (one row each,
        the cameras either run lacks named under the figure); a sequence: those cameras.
      frame_index: frame index shared by both (in titles).
      labels: names of the two outcomes.
      smooth: bilinear heatmaps between patch centres (False: one flat block per patch).
    Returns:
      The figure: per camera row, success / failure / difference maps (colour bars after the failure
      and difference maps); the last axis drawn is the paired word bars. One colour scale for the
      heatmaps of every camera and one symmetric scale for every difference map.
    """
    failure_layout = failure_layout or layout
    s = check_scores(success, layout, ("token",), "success")
    f = check_scores(failure, failure_layout, ("token",), "failure")
    names, absent = _camera_names(camera, layout, failure_layout)
    segs = []
    for name in names:
        seg_s, seg_f = camera_segment(layout, name), camera_segment(failure_layout, name)
        if tuple(seg_s.grid) != tuple(seg_f.grid):
            raise FlowlensError(
                f"camera {name!r} has grid {seg_s.grid} in the success layout but {seg_f.grid} "
                "in the failure layout; compare episodes of the same model."
            )
        segs.append((seg_s, seg_f))
    words_s, vals_s, sinks, sv_s = word_table(s, layout)
    words_f, vals_f, _, sv_f = word_table(f, failure_layout)
    if words_s != words_f:
        raise FlowlensError(
            f"success and failure must share the prompt to compare word by word; "
            f"got {words_s} and {words_f}. "
            "Pick episodes of the same task."
        )
    grids = [(patch_grid(s, layout, a.name), patch_grid(f, failure_layout, b.name)) for a, b in segs]
    lo, hi = limits(np.concatenate([g.ravel() for pair in grids for g in pair]))
    m = limits(np.concatenate([np.abs(gs - gf).ravel() for gs, gf in grids]))[1]
    rows = len(names)
    fig = new_figure((12.0, 3.9 * rows + 3.3))
    spec = fig.add_gridspec(rows + 1, 3, height_ratios=[1.35] * rows + [1.0])
    at = f"frame {frame_index}" if frame_index is not None else "same frame"
    for r, ((seg_s, seg_f), (gs, gf)) in enumerate(zip(segs, grids, strict=True)):
        ax_s, ax_f, ax_d = (fig.add_subplot(spec[r, i]) for i in range(3))
        img_s, img_f = _image_of(images[0], seg_s.name), _image_of(images[1], seg_s.name)
        common = dict(on=on, alpha=alpha, smooth=smooth)
        image_overlay(gs, seg_s, image=img_s, ax=ax_s, cmap=cmap, vmin=lo, vmax=hi, colorbar=False,
                      title=f"{labels[0]} · {at}", **common)
        image_overlay(gf, seg_f, image=img_f, ax=ax_f, cmap=cmap, vmin=lo, vmax=hi, colorbar=True,
                      cbar_label=value_label, title=f"{labels[1]} · {at}", **common)
        image_overlay(gs - gf, seg_s, image=img_s, ax=ax_d, cmap=diverging_cmap, vmin=-m, vmax=m,
                      colorbar=True, cbar_label=f"{labels[0]} − {labels[1]}",
                      title=f"difference ({labels[0]} − {labels[1]})", **common)
        if rows > 1:
            ax_s.set_ylabel(short_camera(seg_s.name), fontsize=11)
    ax_w = fig.add_subplot(spec[rows, :])
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
    note = "cameras: " + ", ".join(short_camera(n) for n in names)
    if rows > 1:
        note += " · one colour scale for every camera's maps, one symmetric scale for every difference"
    if absent:
        note += f" · absent: {', '.join(short_camera(n) for n in absent)} (no image in one or both runs)"
    fig.suptitle(title or f"{labels[0]} vs {labels[1]} · {at} · camera {', '.join(names)}", fontsize=11)
    fig.supxlabel(note, fontsize=9, color="0.25")
    return fig
