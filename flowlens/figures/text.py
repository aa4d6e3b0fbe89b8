"""Text attention: scores on the prompt, merged into words, with the sink tokens shown apart.

BOS and the "\\n" answer marker soak up attention (attention sinks). Folding them into the words,
or renormalising them away, hides how much mass the prompt really gets, so every text figure
shows them *apart*: separate, hatched grey bars after a divider, separate heatmap columns, a
separate "sinks" line under the highlighted text. Scores are sub-word pieces summed into words
(``flowlens.projection.word_scores``).

    word_bars(scores [token], layout)               # bars per word + sinks
    word_layer_heatmap(scores [layer, token], layout)  # layers × words
    highlighted_text(scores [token], layout)        # the prompt with per-word background colour
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError
from flowlens.figures._common import SPECIAL_LABELS, add_colorbar, check_scores, get_ax, layer_ids_for, limits
from flowlens.projection import word_scores

SINK_ROLES = ("bos", "newline", "eos")
SINK_COLOR = "0.55"
WORD_COLOR = "#3b6ea8"
SINK_CLIP = 3.0  # a sink taller than this many times the largest word is clipped (shared axis)


def word_table(
    scores: np.ndarray, layout: TokenLayout
) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """Word and sink values from token scores.

    Args:
      scores: float [..., token].
    Returns:
      (words, values [..., word], sink_labels, sink_values [..., sink]) with sinks in the order
      <bos>, \\n, <eos> (those present in the layout).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if layout.text is None:
        raise FlowlensError("this layout has no text segment, so there are no words to plot.")
    flat = scores.reshape(-1, scores.shape[-1])
    rows = [word_scores(row, layout) for row in flat]
    words = list(rows[0].words)
    sinks = [r for r in SINK_ROLES if r in rows[0].specials]
    values = np.array([r.values for r in rows]).reshape(scores.shape[:-1] + (len(words),))
    sink_values = np.array([[r.specials[s] for s in sinks] for r in rows]).reshape(
        scores.shape[:-1] + (len(sinks),)
    )
    return words, values, [SPECIAL_LABELS[s] for s in sinks], sink_values


def word_bars(
    scores: np.ndarray,
    layout: TokenLayout,
    *,
    ax=None,
    show_sinks: bool = True,
    sink_axis: str = "shared",
    color: str = WORD_COLOR,
    ymax: float | None = None,
    value_label: str = "attention mass",
    title: str | None = None,
    rotate: float | None = None,
):
    """One bar per prompt word, then the sink tokens (hatched grey) after a dashed divider.

    Sinks are drawn on the words' y axis (``sink_axis="shared"``, the default), so a bar's height
    is its mass wherever it stands. Sinks often hold 10–100× the mass of any word: a sink more
    than ``SINK_CLIP``× the largest word is clipped at the top of the axis (the words stay
    readable), marked "▲" and labelled with its full value. ``sink_axis="twin"`` gives the sinks
    their own right-hand axis instead (heights then do not compare with the words').

    Args:
      scores: float [token] over the layout.
      layout: the TokenLayout.
      ax: axes to draw into.
      show_sinks: draw <bos> / \\n bars (default; they are never folded into words).
      sink_axis: "twin" (own right-hand axis) or "shared".
      color: bar colour of the words.
      ymax: upper y limit of the words (share it across panels for comparisons).
      value_label: y-axis label.
      title: axes title.
      rotate: x tick label rotation (default: 0 for ≤ 8 labels, else 45).
    Returns:
      The axes; x tick labels are the words, then "<bos>", "\\n". With a twin sink axis it is
      ``ax.flowlens_sink_axes`` (else None).
    """
    if sink_axis not in ("twin", "shared"):
        from flowlens.errors import unknown_name_error

        raise unknown_name_error("sink_axis", sink_axis, ("twin", "shared"))
    scores = check_scores(scores, layout, ("token",))
    words, values, sink_labels, sink_values = word_table(scores, layout)
    ax = get_ax(ax, figsize=(max(4.0, 0.45 * (len(words) + 3)), 3.2))
    x = np.arange(len(words), dtype=float)
    ax.bar(x, np.nan_to_num(values), color=color, label="prompt words")
    labels = list(words)
    ticks = list(x)
    show = show_sinks and bool(sink_labels)
    both = np.concatenate([values, sink_values]) if show and sink_axis == "shared" else values
    top = limits(both, None, ymax)[1]
    word_top = limits(values, None, ymax)[1]
    clip = show and sink_axis == "shared" and ymax is None and top > SINK_CLIP * word_top
    if clip:  # the words stay readable; the taller sinks are cut at the top, marked and labelled
        top = SINK_CLIP * word_top
    ax.set_ylim(0, top * 1.12)
    ax.flowlens_sink_axes = None
    if show:
        sx = len(words) + 0.6 + np.arange(len(sink_labels))
        target = ax
        if sink_axis == "twin":
            target = ax.twinx()
            target.set_ylim(0, limits(sink_values)[1] * 1.15)
            target.set_ylabel("sink mass (right axis)", color="0.35", fontsize=9)
            target.tick_params(axis="y", colors="0.35", labelsize=8)
            target.spines[["top"]].set_visible(False)
            ax.flowlens_sink_axes = target
        heights = np.nan_to_num(sink_values)
        if clip:
            heights = np.minimum(heights, top * 1.12)
        bars = target.bar(
            sx,
            heights,
            color=SINK_COLOR,
            hatch="//",
            edgecolor="white",
            label="sink tokens",
        )
        for b, v in zip(bars, sink_values, strict=True):
            cut = clip and np.nan_to_num(v) > top * 1.12
            target.annotate(
                f"▲ {v:.3g} (clipped)" if cut else f"{v:.3g}",
                (b.get_x() + b.get_width() / 2, b.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 1),
                textcoords="offset points",
            )
        ax.axvline(len(words) - 0.2, color="0.3", lw=0.8, ls="--")
        ax.text(
            len(words) - 0.1,
            1.0,
            "sinks",
            transform=ax.get_xaxis_transform(),
            ha="left",
            va="top",
            fontsize=8,
            color="0.3",
        )
        labels += sink_labels
        ticks += list(sx)
    ax.set_xticks(ticks)
    rot = rotate if rotate is not None else (0 if len(labels) <= 8 else 45)
    ax.set_xticklabels(labels, rotation=rot, ha="right" if rot else "center", fontsize=9)
    ax.set_xlim(-0.6, ticks[-1] + 0.6)
    ax.set_ylabel(value_label)
    ax.spines[["top"] + ([] if show and sink_axis == "twin" else ["right"])].set_visible(False)
    if title is not None:
        ax.set_title(title, fontsize=10)
    return ax


def word_layer_heatmap(
    scores: np.ndarray,
    layout: TokenLayout,
    *,
    layer_ids: Sequence[int] | None = None,
    ax=None,
    cmap: str = "inferno",
    sink_cmap: str = "Greys",
    show_sinks: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
    value_label: str = "attention mass",
    title: str | None = None,
    ylabel: str = "layer",
):
    """Layers × words heatmap (rows = layers, top to bottom), then the sink columns on their own scale.

    The sink columns (<bos>, \\n) sit right of a white divider with their own grey colormap and
    colorbar: on the words' scale they would be saturated, and on theirs the words would vanish.

    Args:
      scores: float [layer, token].
      layer_ids: model layer id of each row (default 0..L-1); used as y tick labels.
      show_sinks: add the sink columns.
      vmin, vmax: colour limits of the words (default 0 … max over words).
    Returns:
      The axes (``ax.images[0]`` words, ``ax.images[1]`` sinks; x tick labels = words then sinks).
    """
    scores = check_scores(scores, layout, ("layer", "token"))
    ids = layer_ids_for(scores.shape[0], layer_ids)
    words, values, sink_labels, sink_values = word_table(scores, layout)
    show = show_sinks and bool(sink_labels)
    labels = list(words) + (sink_labels if show else [])
    ax = get_ax(ax, figsize=(max(4.0, 0.42 * len(labels) + 2.5), max(3.0, 0.22 * len(ids) + 1.2)))
    nl, nw = len(ids), len(words)
    lo, hi = limits(values, vmin, vmax)
    im = ax.imshow(
        values,
        aspect="auto",
        cmap=cmap,
        vmin=lo,
        vmax=hi,
        interpolation="nearest",
        extent=(-0.5, nw - 0.5, nl - 0.5, -0.5),
    )
    xs = list(range(nw))
    if show:
        slo, shi = limits(sink_values)
        sim = ax.imshow(
            sink_values,
            aspect="auto",
            cmap=sink_cmap,
            vmin=slo,
            vmax=shi,
            interpolation="nearest",
            extent=(nw - 0.3, nw - 0.3 + len(sink_labels), nl - 0.5, -0.5),
        )
        xs += list(nw + 0.2 + np.arange(len(sink_labels)))
        ax.set_xlim(-0.5, nw - 0.3 + len(sink_labels))
    ax.set_ylim(nl - 0.5, -0.5)
    ax.set_xticks(xs)
    ax.set_xticklabels(
        labels, rotation=45 if len(labels) > 8 else 0, ha="right" if len(labels) > 8 else "center", fontsize=9
    )
    step = max(1, int(np.ceil(len(ids) / 18)))
    ax.set_yticks(np.arange(0, len(ids), step))
    ax.set_yticklabels([str(i) for i in ids[::step]], fontsize=8)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title, fontsize=10)
    if colorbar:
        if show:  # added first so that it lands outermost, the words' colorbar next to the heatmap
            add_colorbar(ax, sim, "sinks")
        add_colorbar(ax, im, value_label + " (words)")
    return ax


def highlighted_text(
    scores: np.ndarray,
    layout: TokenLayout,
    *,
    ax=None,
    cmap: str = "YlOrRd",
    vmin: float | None = None,
    vmax: float | None = None,
    fontsize: float = 13,
    show_sinks: bool = True,
    colorbar: bool = True,
    value_label: str = "attention mass",
    title: str | None = None,
):
    """The prompt as text, each word on a background coloured by its score; sinks on their own line.

    Words wrap at the right edge of the axes. The colour scale covers the words only (sinks, which
    are usually much larger, are printed with their values instead of saturating the scale).

    Args:
      scores: float [token] over the layout.
      cmap: colormap of the word backgrounds.
      vmin, vmax: colour limits (default 0 … max over words).
    Returns:
      The axes; ``ax.texts`` holds one Text per word (its string is the word) then the sinks line.
    """
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator
    from matplotlib.transforms import ScaledTranslation

    scores = check_scores(scores, layout, ("token",))
    words, values, sink_labels, sink_values = word_table(scores, layout)
    ax = get_ax(ax, figsize=(6.0, 1.8))
    ax.set_axis_off()
    lo, hi = limits(values, vmin, vmax)
    norm = Normalize(lo, hi)
    cm = matplotlib.colormaps[cmap]
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    # Positions are offsets in inches from the axes' top-left corner, so later layout changes move
    # the block of words but never squeeze words into each other.
    width_in = max(ax.get_window_extent(renderer).width / fig.dpi, 1.0)
    pad_in = fontsize * 0.25 / 72
    gap_in = fontsize * 0.3 / 72
    line_in = fontsize * 2.0 / 72
    x, y = pad_in, -pad_in - fontsize / 72 * 0.2

    def place(x_in, y_in):
        return ax.transAxes + ScaledTranslation(x_in, y_in, fig.dpi_scale_trans)

    for word, v in zip(words, values, strict=True):
        rgba = cm(norm(v)) if np.isfinite(v) else (1, 1, 1, 1)
        lum = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
        t = ax.text(
            0,
            1,
            word,
            transform=place(x, y),
            fontsize=fontsize,
            va="top",
            ha="left",
            color="black" if lum > 0.55 else "white",
            bbox={"boxstyle": "round,pad=0.25", "facecolor": rgba, "edgecolor": "none"},
        )
        w = t.get_window_extent(renderer).width / fig.dpi + 2 * pad_in
        if x > pad_in and x + w > width_in:
            x, y = pad_in, y - line_in
            t.set_transform(place(x, y))
        x += w + gap_in
    if show_sinks and sink_labels:
        text = "sinks (not in colour scale):  " + "   ".join(
            f"{lab} {val:.3g}" for lab, val in zip(sink_labels, sink_values, strict=True)
        )
        ax.text(
            0,
            1,
            text,
            transform=place(pad_in, y - line_in),
            fontsize=max(8, fontsize * 0.7),
            va="top",
            ha="left",
            color="0.3",
        )
    if title is not None:
        ax.set_title(title, fontsize=10)
    if colorbar:
        sm = ScalarMappable(norm=norm, cmap=cm)
        # beside the words (as the layer heatmap's), not detached below them
        cb = fig.colorbar(sm, ax=ax, orientation="vertical", fraction=0.04, pad=0.01, aspect=8)
        cb.set_label(value_label + " (words)", fontsize=8)
        cb.ax.yaxis.set_major_locator(MaxNLocator(4))
        cb.ax.tick_params(labelsize=7)
    return ax
