"""Per-head comparison: a layers × heads grid of small heatmaps (or word bars) on one colour scale.

The BertViz "model view" shows layers × heads thumbnails of token→token lines; for a VLA the
useful thumbnail is where one query (the action tokens) looks in the image and in the prompt.
Every cell shares one colour scale (and one y range for word bars), so a head that looks at the
object stands out from one that looks at the background. ``head_statistic`` draws one number per
head (e.g. the share of mass on the image) as a layers × heads heatmap.

Note (MQA): Pi0's 8 query heads share one key/value head, and suffix queries use the action
expert's projections — "head 3" of a suffix query is not the same function as "head 3" of the VLM.

    fig = head_grid(scores [layer, head, token], layout, camera=0, image=frame)
    fig = head_word_grid(scores [layer, head, token], layout)
    ax = head_statistic(values [layer, head])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError
from flowlens.figures._common import add_colorbar, check_scores, get_ax, layer_ids_for, limits, new_figure
from flowlens.figures.strips import map_panels
from flowlens.figures.text import SINK_COLOR, WORD_COLOR, word_table


def _head_labels(count: int, head_labels: Sequence[str] | None) -> list[str]:
    if head_labels is None:
        return [f"head {h}" for h in range(count)]
    if len(head_labels) != count:
        raise FlowlensError(f"head_labels must name each of the {count} heads, got {len(head_labels)}.")
    return [str(h) for h in head_labels]


def head_grid(
    scores: np.ndarray,
    layout: TokenLayout,
    *,
    camera: str | int = 0,
    image: np.ndarray | None = None,
    layer_ids: Sequence[int] | None = None,
    head_labels: Sequence[str] | None = None,
    title: str | None = None,
    **kwargs,
):
    """Layers × heads grid of one camera's heatmaps with one shared colour scale.

    Args:
      scores: float [layer, head, token] (include a "mean" column by stacking it as a head and
        naming it in ``head_labels``).
      layer_ids: model layer id per row (row labels "layer l").
      head_labels: column titles (default "head 0" …).
      **kwargs: passed to ``map_panels`` (on, cmap, alpha, vmin, vmax, value_label, panel_size).
    Returns:
      The figure; ``fig.axes`` holds layers·heads panels then the colorbar.
    """
    scores = check_scores(scores, layout, ("layer", "head", "token"))
    num_layers, num_heads = scores.shape[:2]
    ids = layer_ids_for(num_layers, layer_ids)
    heads = _head_labels(num_heads, head_labels)
    kwargs.setdefault("panel_size", 1.25)
    fig, _ = map_panels(
        scores.reshape(-1, layout.n),
        layout,
        camera=camera,
        image=image,
        nrows=num_layers,
        ncols=num_heads,
        row_labels=[f"layer {i}" for i in ids],
        col_labels=heads,
        suptitle=title,
        **kwargs,
    )
    return fig


def head_word_grid(
    scores: np.ndarray,
    layout: TokenLayout,
    *,
    layer_ids: Sequence[int] | None = None,
    head_labels: Sequence[str] | None = None,
    show_sinks: bool = True,
    ymax: float | None = None,
    title: str | None = None,
    value_label: str = "attention mass",
    cell_size: tuple[float, float] = (1.9, 1.0),
):
    """Layers × heads grid of word bar charts on one shared y range; sinks (grey, last) clipped to it.

    The y range is set by the words (sinks would flatten every word bar); a sink bar taller than
    the range is cut at the top and its value printed on it.

    Args:
      scores: float [layer, head, token].
      ymax: shared y limit (default: max over all cells' words).
    Returns:
      The figure; every cell's x tick labels (shown on the bottom row) are the words then sinks.
    """
    scores = check_scores(scores, layout, ("layer", "head", "token"))
    num_layers, num_heads = scores.shape[:2]
    ids = layer_ids_for(num_layers, layer_ids)
    heads = _head_labels(num_heads, head_labels)
    words, values, sink_labels, sink_values = word_table(scores, layout)
    if not show_sinks:
        sink_labels, sink_values = [], sink_values[..., :0]
    _, top = limits(values, None, ymax)
    labels = list(words) + sink_labels
    x = np.concatenate([np.arange(len(words)), len(words) + 0.6 + np.arange(len(sink_labels))])
    fig = new_figure((num_heads * cell_size[0] + 0.8, num_layers * cell_size[1] + 1.6))
    axes = fig.subplots(num_layers, num_heads, squeeze=False, sharex=True, sharey=True)
    colors = [WORD_COLOR] * len(words) + [SINK_COLOR] * len(sink_labels)
    lim = top * 1.1
    for r in range(num_layers):
        for c in range(num_heads):
            ax = axes[r, c]
            heights = np.nan_to_num(np.concatenate([values[r, c], sink_values[r, c]]))
            ax.bar(x, np.minimum(heights, lim), color=colors, width=0.8)
            for xi, v in zip(x[len(words) :], sink_values[r, c], strict=True):
                if v > lim:
                    ax.text(
                        xi,
                        lim * 0.97,
                        f"{v:.2f}",
                        rotation=90,
                        ha="center",
                        va="top",
                        fontsize=5,
                        color="white",
                    )
            ax.set_ylim(0, lim)
            ax.spines[["top", "right"]].set_visible(False)
            ax.tick_params(labelsize=6)
            if r == 0:
                ax.set_title(heads[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(f"layer {ids[r]}", fontsize=7)
    for ax in axes[-1]:
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=90, fontsize=6)
    fig.supylabel(value_label + " (shared y; sinks clipped, value printed)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def head_statistic(
    values: np.ndarray,
    *,
    ax=None,
    layer_ids: Sequence[int] | None = None,
    head_labels: Sequence[str] | None = None,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool | None = None,
    value_label: str = "share",
    title: str | None = None,
):
    """One number per (layer, head) as a heatmap (rows = layers), e.g. the share of mass on the image.

    Args:
      values: float [layer, head].
      annotate: print values in the cells (default: when the grid has ≤ 160 cells).
    Returns:
      The axes (``ax.images[0]`` the heatmap; x tick labels = head labels, y = layer ids).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise FlowlensError(f"values must be [layer, head], got shape {values.shape}.")
    ids = layer_ids_for(values.shape[0], layer_ids)
    heads = _head_labels(values.shape[1], head_labels)
    ax = get_ax(ax, figsize=(0.6 * len(heads) + 2.0, 0.3 * len(ids) + 1.4))
    lo, hi = limits(values, vmin, vmax)
    im = ax.imshow(values, aspect="auto", cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_xticks(np.arange(len(heads)))
    ax.set_xticklabels(heads, fontsize=8, rotation=45 if len(heads) > 8 else 0)
    ax.set_yticks(np.arange(len(ids)))
    ax.set_yticklabels([str(i) for i in ids], fontsize=7)
    ax.set_ylabel("layer")
    if annotate if annotate is not None else values.size <= 160:
        for (r, c), v in np.ndenumerate(values):
            shade = (v - lo) / (hi - lo) if np.isfinite(v) else 0
            ax.text(
                c,
                r,
                f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=6,
                color="black" if shade > 0.6 else "white",
            )
    if title is not None:
        ax.set_title(title, fontsize=10)
    add_colorbar(ax, im, value_label)
    return ax
