"""Figure-level composers: the four multi-panel PNGs of the ``--viz-type image|text|combined|all`` workflow.

    attention_image.png      visual attention heatmaps per layer (rows = layers, columns = cameras)
    attention_text.png       word bars, layers × words heatmap, highlighted prompt
    attention_combined.png   cameras and words side by side, with a statistics table
    attention_evolution.png  share of the query's mass per token group across layers

All take the scores of one query as ``[layer, token]`` or ``[layer, head, token]`` (heads are fused
per ``FigureConfig.heads``), the layout, and camera frames; ``write_figures`` renders the chosen
set and writes them atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError, unknown_name_error
from flowlens.figures._common import (
    add_colorbar,
    camera_note,
    images_for,
    layer_ids_for,
    limits,
    new_figure,
    pick_layers,
    select_heads,
    short_camera,
    valid_cameras,
)
from flowlens.figures.config import LEGACY_VIZ_TYPES, FigureConfig
from flowlens.figures.evolution import group_label, group_shares, share_evolution
from flowlens.figures.image import image_overlay
from flowlens.figures.save import save_figure
from flowlens.figures.text import highlighted_text, word_bars, word_layer_heatmap, word_table
from flowlens.projection import patch_grid

MAX_LAYER_ROWS = 6  # up to this many layers: one row per layer
LAYERS_PER_ROW = 9  # beyond: rows of 9 layers per camera view


def prepare_scores(
    scores: np.ndarray, layout: TokenLayout, layer_ids: Sequence[int] | None, config: FigureConfig
) -> tuple[np.ndarray, list[int]]:
    """[layer, token] or [layer, head, token] → ([chosen layer, token], chosen layer ids).

    Heads are fused by ``config.heads`` (None = mean); layers are picked by ``config.layers``.
    """
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim not in (2, 3) or arr.shape[-1] != layout.n:
        raise FlowlensError(
            f"scores must be [layer, token] or [layer, head, token] with token = {layout.n}, got shape "
            f"{arr.shape}. For a single layer pass scores[None]."
        )
    if arr.ndim == 3:
        arr = select_heads(arr, config.heads, axis=1)
    ids = layer_ids_for(arr.shape[0], layer_ids)
    return pick_layers(arr, ids, config.layers)


def _views(config: FigureConfig) -> list[str]:
    return ["frame", "model"] if config.on == "both" else [config.on]


def _camera_panel(ax, scores, layout, cam, images, view, config, vmin, vmax, title):
    """One camera's token scores [token] overlaid per ``config``, on a shared colour scale, no colorbar."""
    return image_overlay(patch_grid(scores, layout, cam.name), cam, image=images.get(cam.name), on=view, ax=ax,
                         cmap=config.cmap, alpha=config.alpha, vmin=vmin, vmax=vmax, smooth=config.smooth,
                         show_patch_grid=config.patch_grid, colorbar=False, title=title)


def attention_image_figure(
    scores: np.ndarray,
    layout: TokenLayout,
    images: Mapping[str, np.ndarray] | None = None,
    *,
    layer_ids: Sequence[int] | None = None,
    config: FigureConfig | None = None,
    step: int | None = None,
):
    """Heatmaps per layer and camera (frame and/or model input), one shared colour scale.

    Up to 6 layers: one row per layer, one column per camera view. More layers (e.g. all 18):
    one block of rows per camera view with 9 layers per row, each panel titled "layer l".

    Args:
      scores: float [layer, token] or [layer, head, token] of one query.
      images: camera name → uint8 [H, W, 3] frame (cameras without a frame get the heatmap alone).
      layer_ids: model layer id of each row of ``scores`` (default 0..L-1).
      config: layers / heads / cmap / alpha / on / labels.
      step: denoising step (for the title).
    Returns:
      The figure; its axes in grid order (unused ones hidden), then the colorbar.
    """
    config = config or FigureConfig()
    vals, ids = prepare_scores(scores, layout, layer_ids, config)
    imgs = images_for(images, layout)
    cams = valid_cameras(layout) or list(layout.cameras)
    panels = [(cam, view) for cam in cams for view in _views(config)]  # one (camera, view) per column
    scales = camera_limits(vals, layout, cams, config.camera_scale)

    def label(cam, view):
        return short_camera(cam.name) + (f" ({view})" if config.on == "both" else "")

    if len(ids) <= MAX_LAYER_ROWS:  # rows = layers, columns = camera views
        grid_rows, grid_cols, size = len(ids), len(panels), 2.3
        cells = [(r, c, li, panels[c]) for r, li in enumerate(range(len(ids))) for c in range(len(panels))]
    else:  # many layers: a block of rows per camera view, LAYERS_PER_ROW layers per row
        per_row = min(len(ids), LAYERS_PER_ROW)
        blocks = int(np.ceil(len(ids) / per_row))
        grid_rows, grid_cols, size = blocks * len(panels), per_row, 1.55
        cells = [
            (pi * blocks + li // per_row, li % per_row, li, panel)
            for pi, panel in enumerate(panels)
            for li in range(len(ids))
        ]
    fig = new_figure(config.figsize or (grid_cols * size + 1.2, grid_rows * size + 0.8))
    axes = fig.subplots(grid_rows, grid_cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for r, c, li, (cam, view) in cells:
        ax = axes[r, c]
        ax.set_axis_on()
        if len(ids) <= MAX_LAYER_ROWS:
            title = label(cam, view) if r == 0 else ""
        else:
            title = f"layer {ids[li]}"
        _camera_panel(ax, vals[li], layout, cam, imgs, view, config, *scales[cam.name], title)
        if len(ids) > MAX_LAYER_ROWS:
            ax.title.set_fontsize(8)
            if c == 0:
                ax.set_ylabel(label(cam, view), fontsize=9)
        elif c == 0:
            ax.set_ylabel(f"layer {ids[li]}", fontsize=9)
    camera_colorbars(
        [(cam, axes[r, c]) for r, c, _, (cam, _) in cells], config, all_axes=axes.ravel().tolist()
    )
    fig.suptitle(
        config.title(step=step, extra="visual attention per layer") + "\n" + camera_note(layout), fontsize=10
    )
    return fig


def camera_limits(values: np.ndarray, layout: TokenLayout, cams, scale: str) -> dict[str, tuple[float, float]]:
    """Colour limits per camera name: one range over every camera ("shared"), or each its own ("camera").

    Args:
      values: float [..., token] scores drawn (every layer shown).
    """
    grids = {c.name: patch_grid(values, layout, c.name).ravel() for c in cams}
    if scale == "camera":
        return {name: limits(g) for name, g in grids.items()}
    shared = limits(np.concatenate(list(grids.values())))
    return dict.fromkeys(grids, shared)


def camera_colorbars(panels, config: FigureConfig, *, all_axes) -> list:
    """One colorbar over every panel (shared scale) or one per camera (``camera_scale="camera"``),
    labelled with the scale it is. ``panels``: (camera segment, axes) drawn, in order."""
    if config.camera_scale != "camera":
        first = panels[0][1]
        label = config.value_label + (" · one scale, all cameras" if len({c.name for c, _ in panels}) > 1 else "")
        return [add_colorbar(first, first.images[-1], label, axes=all_axes)]
    bars = []
    for name in dict.fromkeys(c.name for c, _ in panels):
        own = [ax for c, ax in panels if c.name == name]
        label = f"{config.value_label} · {short_camera(name)} on its own scale"
        bars.append(add_colorbar(own[0], own[0].images[-1], label, axes=own))
    return bars


def attention_text_figure(
    scores: np.ndarray,
    layout: TokenLayout,
    *,
    layer_ids: Sequence[int] | None = None,
    config: FigureConfig | None = None,
    step: int | None = None,
    focus_layer: int | None = None,
):
    """Word bars (focus layer), layers × words heatmap, and the highlighted prompt (focus layer).

    Args:
      scores: float [layer, token] or [layer, head, token].
      focus_layer: model layer of the bar chart and highlighted text (default: the last chosen layer).
    Returns:
      The figure with axes [bars, heatmap, heatmap colorbar, highlighted text, its colorbar].
    """
    config = config or FigureConfig()
    vals, ids = prepare_scores(scores, layout, layer_ids, config)
    focus = ids[-1] if focus_layer is None else int(focus_layer)
    if focus not in ids:
        raise FlowlensError(f"focus_layer {focus} is not among the drawn layers {ids}.")
    row = vals[ids.index(focus)]
    n_words = len(layout.text.words) if layout.text is not None else 0
    width = config.figsize[0] if config.figsize else max(8.0, 0.55 * (n_words + 3) + 2.0)
    height = config.figsize[1] if config.figsize else 3.2 + max(2.5, 0.2 * len(ids) + 1.2) + 1.6
    fig = new_figure((width, height))
    spec = fig.add_gridspec(3, 1, height_ratios=[3.2, max(2.5, 0.2 * len(ids) + 1.2), 1.6])
    word_bars(
        row,
        layout,
        ax=fig.add_subplot(spec[0]),
        value_label=config.value_label,
        title=f"layer {focus}: mass per word (sinks apart)",
    )
    word_layer_heatmap(
        vals,
        layout,
        layer_ids=ids,
        ax=fig.add_subplot(spec[1]),
        cmap=config.cmap,
        value_label=config.value_label,
        title="layers × words",
    )
    highlighted_text(
        row,
        layout,
        ax=fig.add_subplot(spec[2]),
        cmap=config.cmap,  # the layers × words heatmap's colormap: one colour means one value
        value_label=config.value_label,
        title=f"prompt coloured by layer {focus}",
    )
    fig.suptitle(config.title(step=step, extra="text attention"), fontsize=10)
    return fig


def summary_table(scores: np.ndarray, layout: TokenLayout, *, top: int = 3) -> list[tuple[str, str]]:
    """Rows (label, value) summarising one query's scores [token]: group shares, top words, peak patches."""
    names, shares = group_shares(scores, layout)
    rows = [
        (f"share: {group_label(n, layout)}", f"{100 * s:.1f}%")
        for n, s in zip(names, shares, strict=True)
        if s > 0
    ]
    absent = [short_camera(c.name) for c in layout.cameras if not c.valid]
    if absent:
        rows.append(("absent cameras", ", ".join(absent) + " (no share)"))
    if layout.text is not None:
        words, vals, _, _ = word_table(scores, layout)
        order = np.argsort(-np.nan_to_num(vals, nan=-np.inf))[:top]
        rows.append(("top words", ", ".join(f"{_cut(words[i])} ({vals[i]:.3f})" for i in order)))
    for cam in valid_cameras(layout):
        g = patch_grid(scores, layout, cam.name)
        if np.isfinite(g).any():
            r, c = np.unravel_index(int(np.nanargmax(g)), g.shape)
            p = np.nan_to_num(g.ravel()) / max(float(np.nansum(g)), 1e-12)
            ent = float(-(p[p > 0] * np.log(p[p > 0])).sum() / np.log(p.size))
            rows.append((f"{short_camera(cam.name)}: peak patch", f"row {r}, col {c} ({g[r, c]:.4f})"))
            rows.append((f"{short_camera(cam.name)}: entropy", f"{ent:.2f} of max 1"))
    return rows


def _cut(word: str, limit: int = 10) -> str:
    """A word short enough for a table cell ("xylophones" stays, "refrigerator" → "refrigera…")."""
    return word if len(word) <= limit else word[: limit - 1] + "…"


def attention_combined_figure(
    scores: np.ndarray,
    layout: TokenLayout,
    images: Mapping[str, np.ndarray] | None = None,
    *,
    layer_ids: Sequence[int] | None = None,
    config: FigureConfig | None = None,
    step: int | None = None,
    focus_layer: int | None = None,
):
    """Visual and linguistic attention of one layer side by side, with a statistics table.

    Top: one heatmap per valid camera and the statistics table; bottom: word bars (sinks apart).

    Returns:
      The figure; axes: cameras…, colorbar, table, word bars.
    """
    config = config or FigureConfig()
    vals, ids = prepare_scores(scores, layout, layer_ids, config)
    focus = ids[-1] if focus_layer is None else int(focus_layer)
    if focus not in ids:
        raise FlowlensError(f"focus_layer {focus} is not among the drawn layers {ids}.")
    row = vals[ids.index(focus)]
    imgs = images_for(images, layout)
    cams = valid_cameras(layout) or list(layout.cameras)
    view = "frame" if config.on == "both" else config.on
    fig = new_figure(config.figsize or (3.3 * len(cams) + 5.2, 6.6))
    spec = fig.add_gridspec(
        2, len(cams) + 1, height_ratios=[1.25, 1.0], width_ratios=[1] * len(cams) + [1.45]
    )
    scales = camera_limits(row, layout, cams, config.camera_scale)
    cam_axes = []
    for i, cam in enumerate(cams):
        ax = fig.add_subplot(spec[0, i])
        _camera_panel(ax, row, layout, cam, imgs, view, config, *scales[cam.name], short_camera(cam.name))
        cam_axes.append(ax)
    camera_colorbars(list(zip(cams, cam_axes, strict=True)), config, all_axes=cam_axes)
    ax_t = fig.add_subplot(spec[0, -1])
    ax_t.set_axis_off()
    table = ax_t.table(
        cellText=[[a, b] for a, b in summary_table(row, layout)],
        colLabels=["statistic", "value"],
        cellLoc="left",
        colWidths=[0.45, 0.55],
        bbox=[0.0, 0.0, 1.0, 0.93],
    )
    table.auto_set_font_size(False)
    table.set_fontsize(7.5)
    ax_t.set_title(f"layer {focus} statistics", fontsize=10)
    word_bars(
        row,
        layout,
        ax=fig.add_subplot(spec[1, :]),
        value_label=config.value_label,
        title=f"layer {focus}: prompt words (sinks apart)",
    )
    fig.suptitle(
        config.title(layer=focus, step=step, extra="visual and linguistic") + "\n" + camera_note(layout),
        fontsize=10,
    )
    return fig


def attention_evolution_figure(
    scores: np.ndarray,
    layout: TokenLayout,
    *,
    layer_ids: Sequence[int] | None = None,
    config: FigureConfig | None = None,
    step: int | None = None,
):
    """Share of the query's mass per token group across layers: stacked (left) and modality lines (right).

    Returns:
      The figure with axes [stacked shares, modality lines].
    """
    config = config or FigureConfig()
    vals, ids = prepare_scores(scores, layout, layer_ids, config)
    fig = new_figure(config.figsize or (12.0, 4.0))
    ax_a, ax_b = fig.subplots(1, 2, width_ratios=[1.25, 1.0])
    share_evolution(vals, layout, x_values=ids, ax=ax_a, title="share per token group (stacked)")
    names, shares = group_shares(vals, layout)
    cams = {c.name for c in layout.cameras}
    modality = {
        "image (all cameras)": [i for i, n in enumerate(names) if n in cams],
        "prompt words": [i for i, n in enumerate(names) if n == "words"],
        "sinks (<bos>, \\n)": [i for i, n in enumerate(names) if n in ("bos", "newline", "eos")],
        "state + actions": [i for i, n in enumerate(names) if n in ("state", "actions")],
    }
    colors = ["#1f77b4", "#d62728", "#7f7f7f", "#ff7f0e"]
    for (label, idx), color in zip(modality.items(), colors, strict=True):
        if idx and shares[:, idx].sum() > 0:
            ax_b.plot(ids, shares[:, idx].sum(axis=1), marker="o", ms=3, label=label, color=color)
    ax_b.set_ylim(0, 1)
    ax_b.set_xlabel("layer")
    if len(ids) <= 20:
        ax_b.set_xticks(ids)
    ax_b.set_ylabel("share of total mass")
    ax_b.set_title("per modality", fontsize=10)
    ax_b.legend(fontsize=8, frameon=False)
    ax_b.spines[["top", "right"]].set_visible(False)
    absent = any(not c.valid for c in layout.cameras)
    fig.suptitle(
        config.title(step=step, extra="evolution across layers") + ("\n" + camera_note(layout) if absent else ""),
        fontsize=10,
    )
    return fig


def write_figures(
    out_dir: str | os.PathLike,
    scores: np.ndarray,
    layout: TokenLayout,
    images: Mapping[str, np.ndarray] | None = None,
    *,
    viz_type: str = "all",
    layer_ids: Sequence[int] | None = None,
    config: FigureConfig | None = None,
    step: int | None = None,
    prefix: str = "attention",
) -> dict[str, Path]:
    """Render and atomically write the legacy PNGs.

    Args:
      out_dir: directory (created if missing).
      scores: float [layer, token] or [layer, head, token] of one query.
      images: camera name → uint8 [H, W, 3] frame.
      viz_type: "image", "text", "combined", "evolution" or "all".
      prefix: file name prefix ("attention" → attention_image.png, ...).
    Returns:
      {"image": path, ...} for the figures written.
    """
    config = config or FigureConfig()
    import matplotlib.pyplot as plt

    if viz_type not in (*LEGACY_VIZ_TYPES, "all"):
        raise unknown_name_error("viz_type", viz_type, (*LEGACY_VIZ_TYPES, "all"))
    kinds = LEGACY_VIZ_TYPES if viz_type == "all" else (viz_type,)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    makers = {
        "image": lambda: attention_image_figure(
            scores, layout, images, layer_ids=layer_ids, config=config, step=step
        ),
        "text": lambda: attention_text_figure(scores, layout, layer_ids=layer_ids, config=config, step=step),
        "combined": lambda: attention_combined_figure(
            scores, layout, images, layer_ids=layer_ids, config=config, step=step
        ),
        "evolution": lambda: attention_evolution_figure(
            scores, layout, layer_ids=layer_ids, config=config, step=step
        ),
    }
    written = {}
    for kind in kinds:
        fig = makers[kind]()
        try:
            written[kind] = save_figure(fig, out / f"{prefix}_{kind}.png", dpi=config.dpi)
        finally:
            plt.close(fig)
    return written
