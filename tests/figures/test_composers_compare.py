import os

import numpy as np
import pytest

from flowlens.errors import FlowlensError
from flowlens.figures import (
    FigureConfig,
    attention_combined_figure,
    attention_evolution_figure,
    attention_image_figure,
    attention_text_figure,
    compare_outcomes,
    write_figures,
)
from flowlens.testing import synthetic_capture

CFG = FigureConfig(layers=(0, 9, 17), method="raw attention", query="action tokens")


def test_image_figure_rows_are_layers_columns_cameras(data):
    fig = attention_image_figure(data.raw, data.layout, data.images, config=CFG, step=0)
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 3 * 2  # 3 layers x 2 valid cameras (the masked one is left out)
    assert [maps[i].get_ylabel() for i in (0, 2, 4)] == ["layer 0", "layer 9", "layer 17"]
    assert [maps[i].get_title() for i in (0, 1)] == ["base", "left wrist"]
    assert len({ax.images[-1].get_clim() for ax in maps}) == 1
    assert fig._suptitle.get_text().startswith("raw attention · query: action tokens · step 0 · heads: mean")


def test_image_figure_both_views_and_single_head(data):
    cfg = FigureConfig(layers=(17,), heads=1, on="both")
    fig = attention_image_figure(data.raw, data.layout, data.images, config=cfg)
    maps = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in maps] == [
        "base (frame)",
        "base (model)",
        "left wrist (frame)",
        "left wrist (model)",
    ]
    seg = data.layout.cameras[0]
    assert maps[0].images[-1].get_clim()[1] == pytest.approx(
        max(np.nanmax(data.raw[17, 1, c.start : c.stop]) for c in data.layout.cameras[:2])
    )
    assert "head 1" in fig._suptitle.get_text()
    assert seg.name == "base_0_rgb"


def test_text_figure(data):
    fig = attention_text_figure(data.raw, data.layout, config=CFG, step=0)
    bars, heat = fig.axes[0], fig.axes[1]  # one y axis for words and sinks (no twin in between)
    assert bars.get_title() == "layer 17: mass per word (sinks apart)"
    assert [t.get_text() for t in heat.get_yticklabels()] == ["0", "9", "17"]
    assert "text attention" in fig._suptitle.get_text()


def test_combined_figure_has_cameras_table_and_words(data):
    fig = attention_combined_figure(
        data.rollout, data.layout, data.images, config=FigureConfig(method="rollout")
    )
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 2
    table_ax = next(ax for ax in fig.axes if ax.tables)
    cells = [c.get_text().get_text() for c in table_ax.tables[0].get_celld().values()]
    assert "share: <bos> (sink)" in cells and "top words" in cells
    assert "rollout · query: action tokens · layer 17" in fig._suptitle.get_text()


def test_evolution_figure(data):
    fig = attention_evolution_figure(data.raw, data.layout, config=FigureConfig())
    stacked, lines = fig.axes[:2]
    assert len(stacked.collections) == 7
    assert [t.get_text() for t in lines.get_legend().get_texts()] == [
        "image (all cameras)",
        "prompt words",
        "sinks (<bos>, \\n)",
        "state + actions",
    ]


def test_bad_layers_and_shapes(data):
    with pytest.raises(FlowlensError, match="layer 30 was asked for"):
        attention_image_figure(data.raw, data.layout, config=FigureConfig(layers=(30,)))
    with pytest.raises(FlowlensError, match=r"\[layer, token\] or \[layer, head, token\]"):
        attention_text_figure(data.raw[0, 0], data.layout)
    with pytest.raises(FlowlensError, match="Did you mean 'base_0_rgb'"):
        attention_image_figure(data.raw, data.layout, {"base_rgb": data.images["base_0_rgb"]})


def test_write_figures_writes_all_four_pngs(tmp_path):
    cap = synthetic_capture("toy", num_layers=3, num_heads=2, num_steps=1)
    p, act = cap.layout.prefix_len, cap.layout.actions
    scores = cap.step(0).probs[:, :, act.start - p : act.stop - p].mean(axis=2)
    frame = np.full((32, 32, 3), 128, np.uint8)
    written = write_figures(
        tmp_path / "out", scores, cap.layout, {"base_0_rgb": frame}, config=FigureConfig(dpi=40)
    )
    assert sorted(written) == ["combined", "evolution", "image", "text"]
    assert sorted(os.listdir(tmp_path / "out")) == [
        "attention_combined.png",
        "attention_evolution.png",
        "attention_image.png",
        "attention_text.png",
    ]
    with pytest.raises(FlowlensError, match="Did you mean 'image'"):
        write_figures(tmp_path, scores, cap.layout, viz_type="images")


def test_compare_outcomes(data):
    fig = compare_outcomes(
        data.rollout[-1],
        data.rollout[5],
        data.layout,
        images=(data.images["base_0_rgb"], data.images["base_0_rgb"]),
        frame_index=40,
    )
    s, f, d = fig.axes[:3]
    assert s.get_title() == "success · frame 40" and f.get_title() == "failure · frame 40"
    assert s.images[-1].get_clim() == f.images[-1].get_clim()
    lo, hi = d.images[-1].get_clim()
    assert lo == pytest.approx(-hi)
    assert "frame 40" in fig._suptitle.get_text()


def test_compare_needs_same_prompt(data):
    from flowlens.core.openpi_layout import pi0_layout

    other = pi0_layout("open the drawer")
    with pytest.raises(FlowlensError, match="share the prompt"):
        compare_outcomes(data.rollout[-1], np.zeros(other.n), data.layout, failure_layout=other)


def test_image_figure_with_all_18_layers_wraps_into_blocks(data):
    fig = attention_image_figure(
        data.rollout, data.layout, data.images, config=FigureConfig(method="rollout")
    )
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 18 * 2
    assert [ax.get_title() for ax in maps[:9]] == [f"layer {i}" for i in range(9)]
    assert maps[0].get_ylabel() == "base" and maps[18].get_ylabel() == "left wrist"
    assert len({ax.images[-1].get_clim() for ax in maps}) == 1


def test_compare_sinks_share_the_words_axis_and_the_difference_has_a_frame(data):
    from flowlens.figures.text import word_table

    frame = data.images["base_0_rgb"]
    fig = compare_outcomes(data.rollout[-1], data.rollout[5], data.layout, images=(frame, frame), frame_index=4)
    s, f, d, words = (ax for ax in fig.axes if ax.get_label() != "<colorbar>")
    assert len(d.images) == 2  # the frame under the difference map, then the map
    bar_axes = [ax for ax in fig.axes if ax.patches]
    assert bar_axes == [words]  # one y axis: no twin for the sinks
    _, vals, sinks, sink_vals = word_table(data.rollout[-1], data.layout)
    assert sinks == ["<bos>", "\\n"]
    hatched = [p for p in words.patches if p.get_hatch() == "//"]
    assert [p.get_height() for p in hatched[: len(sinks)]] == pytest.approx(list(sink_vals))
    top = max(np.nanmax(vals), np.nanmax(sink_vals))
    assert words.get_ylim()[1] >= top
    assert [t.get_text() for t in words.texts if t.get_text().startswith("0.")][0] == f"{sink_vals[0]:.3f}"


def test_image_figure_per_camera_scale_is_stated_in_each_colorbar(data):
    from flowlens.projection import patch_grid

    cfg = FigureConfig(layers=(0, 17), camera_scale="camera", value_label="attention mass")
    fig = attention_image_figure(data.raw, data.layout, data.images, config=cfg, step=0)
    maps = [ax for ax in fig.axes if ax.images]
    vals = data.raw.mean(axis=1)[[0, 17]]  # mean over heads, the two layers drawn
    for cam, axes in (("base_0_rgb", maps[0::2]), ("left_wrist_0_rgb", maps[1::2])):
        top = np.nanmax(patch_grid(vals, data.layout, cam))
        assert [ax.images[-1].get_clim() for ax in axes] == [(0.0, pytest.approx(top))] * 2
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert [b.get_ylabel() for b in bars] == [
        "attention mass · base on its own scale",
        "attention mass · left wrist on its own scale",
    ]
    shared = attention_image_figure(data.raw, data.layout, data.images, config=CFG, step=0)
    assert [ax.get_ylabel() for ax in shared.axes if ax.get_label() == "<colorbar>"] == [
        "attention mass · one scale, all cameras"
    ]
    with pytest.raises(FlowlensError, match="camera_scale"):
        FigureConfig(camera_scale="per-camera")


def test_text_figure_words_share_the_heatmaps_colormap_and_a_side_colorbar(data):
    fig = attention_text_figure(data.raw, data.layout, config=CFG, step=0)
    heat = fig.axes[1]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    chips_bar = bars[-1]  # the highlighted prompt's colorbar, drawn last
    assert heat.images[0].get_cmap().name == "inferno"
    cb = chips_bar._colorbar
    assert cb.cmap.name == "inferno" and cb.orientation == "vertical"


def test_combined_table_keeps_long_top_words_inside_their_cell():
    from flowlens.core.openpi_layout import pi0_layout
    from flowlens.figures.composers import summary_table

    layout = pi0_layout("put the extraordinarily enormous refrigerator beside microwaveovens")
    scores = np.zeros(layout.n)
    text = layout.text
    scores[text.start : text.stop] = np.linspace(0.1, 1.0, text.size)
    (value,) = [v for k, v in summary_table(scores, layout) if k == "top words"]
    assert all(len(part.split(" (")[0]) <= 10 for part in value.split(", "))
    assert len(value) <= 3 * (10 + 9) + 4
