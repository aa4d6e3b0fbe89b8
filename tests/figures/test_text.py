import numpy as np
import pytest

from flowlens.errors import FlowlensError
from flowlens.figures import highlighted_text, word_bars, word_layer_heatmap
from flowlens.figures.text import word_table

WORDS = ["pick", "up", "the", "black", "bowl", "and", "place", "it", "on", "the", "plate"]


def labels(ax):
    return [t.get_text() for t in ax.get_xticklabels()]


def test_word_bars_words_then_sinks_on_their_own_axis(data):
    scores = data.raw[-1].mean(axis=0)
    ax = word_bars(scores, data.layout, title="layer 17", sink_axis="twin")
    assert labels(ax) == WORDS + ["<bos>", "\\n"]
    assert len(ax.patches) == len(WORDS)
    sink_ax = ax.flowlens_sink_axes
    assert sink_ax is not None and len(sink_ax.patches) == 2
    assert "sink" in sink_ax.get_ylabel()
    text = data.layout.text
    bos = scores[text.start]
    assert sink_ax.patches[0].get_height() == pytest.approx(bos)
    # the words keep a readable scale even though the sinks are ~100x larger
    assert ax.get_ylim()[1] < bos / 10
    assert {t.get_text() for t in sink_ax.texts} == {f"{bos:.3g}", f"{scores[text.start + 12]:.3g}"}


def test_word_bars_default_one_axis_sinks_true_height_or_clipped_and_labelled(data):
    text = data.layout.text
    scores = data.raw[-1].mean(axis=0)
    ax = word_bars(scores, data.layout)
    assert ax.flowlens_sink_axes is None and len(ax.figure.axes) == 1  # one y axis
    _, words, _, _ = word_table(scores, data.layout)
    top = ax.get_ylim()[1]
    assert top == pytest.approx(3.0 * np.nanmax(words) * 1.12)  # sinks ~100x: clipped at 3x the largest word
    bos = scores[text.start]
    assert ax.patches[len(WORDS)].get_height() == pytest.approx(top) and ax.patches[len(WORDS)].get_hatch() == "//"
    assert f"▲ {bos:.3g} (clipped)" in {t.get_text() for t in ax.texts}
    small = np.array(scores)
    small[[text.start, text.start + 12]] = 0.5 * np.nanmax(words)  # sinks below the words: true heights
    ax = word_bars(small, data.layout)
    assert ax.patches[len(WORDS)].get_height() == pytest.approx(small[text.start])
    assert ax.get_ylim()[1] == pytest.approx(np.nanmax(words) * 1.12)


def test_word_bars_merges_pieces():
    """The synthetic tokenizer splits words longer than 5 letters in two pieces; a bar sums them."""
    from flowlens.core.openpi_layout import pi0_layout

    layout = pi0_layout("pick up the orange bowl")
    text = layout.text
    scores = np.zeros(layout.n)
    pieces = [i for i, p in enumerate(text.pieces) if p in ("▁ora", "nge")]
    assert len(pieces) == 2
    scores[text.start + np.array(pieces)] = [0.25, 0.5]
    scores[text.start] = 0.1  # <bos>
    ax = word_bars(scores, layout, sink_axis="shared")
    assert labels(ax) == ["pick", "up", "the", "orange", "bowl", "<bos>", "\\n"]
    assert ax.patches[3].get_height() == pytest.approx(0.75)
    assert ax.flowlens_sink_axes is None
    assert [b.get_height() for b in ax.patches[5:]] == pytest.approx([0.1, 0.0])


def test_layers_by_words_heatmap(data):
    ax = word_layer_heatmap(data.rollout, data.layout, title="rollout")
    assert labels(ax) == WORDS + ["<bos>", "\\n"]
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(i) for i in range(18)]
    words_im, sinks_im = ax.images
    assert words_im.get_array().shape == (18, len(WORDS))
    assert sinks_im.get_array().shape == (18, 2)
    assert words_im.colorbar.ax.get_ylabel() == "attention mass (words)"
    assert sinks_im.colorbar.ax.get_ylabel() == "sinks"
    assert words_im.get_clim()[1] < sinks_im.get_clim()[1]


def test_highlighted_text_colours_each_word_and_wraps(data):
    ax = highlighted_text(data.rollout[-1], data.layout, title="rollout")
    words = [t for t in ax.texts if t.get_bbox_patch() is not None]
    assert [t.get_text() for t in words] == WORDS
    colors = {tuple(t.get_bbox_patch().get_facecolor()) for t in words}
    assert len(colors) > 1
    assert "<bos>" in ax.texts[-1].get_text() and "\\n" in ax.texts[-1].get_text()
    import matplotlib.pyplot as plt

    fig, narrow = plt.subplots(figsize=(1.5, 2))
    highlighted_text(data.rollout[-1], data.layout, ax=narrow)
    ys = {round(t.get_transform().transform((0, 1))[1]) for t in narrow.texts[:-1]}
    assert len(ys) > 1  # wrapped onto several lines


def test_text_figures_need_a_text_segment(data):
    with pytest.raises(FlowlensError, match="sink_axis"):
        word_bars(data.rollout[-1], data.layout, sink_axis="left")
    with pytest.raises(FlowlensError, match=r"\[layer, token\]"):
        word_layer_heatmap(data.rollout[-1], data.layout)
