"""The one-frame views (flowlens.figures.views): steps, heads, actions, success vs failure."""

import numpy as np
import pytest

from flowlens.errors import FlowlensError
from flowlens.figures import (
    FigureConfig,
    actions_figure,
    first_camera,
    heads_figure,
    outcome_figure,
    steps_figure,
)
from flowlens.testing import toy_layout


def test_first_camera_skips_masked_cameras(data):
    assert first_camera(toy_layout()) == ("base_0_rgb", None)  # left_wrist_0_rgb comes second
    name, image = first_camera(data.layout, data.images)
    assert name == "base_0_rgb" and image is data.images["base_0_rgb"]


def test_heads_figure_draws_at_most_six_layers_evenly(data):
    fig = heads_figure(
        data.raw, data.layout, data.images, layer_ids=range(18), layers=range(18), query_label="a0", step=0
    )
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 6 * 2  # 6 layers × 2 heads
    assert [maps[i].get_ylabel() for i in range(0, 12, 2)] == [f"layer {x}" for x in (0, 3, 7, 10, 14, 17)]
    assert "query: a0 · step 0" in fig._suptitle.get_text()


def test_heads_figure_takes_the_rows_of_the_layers_asked(data):
    fig = heads_figure(data.raw[[4, 9]], data.layout, layer_ids=[4, 9], layers=[9], query_label="a0", step=2)
    maps = [ax for ax in fig.axes if ax.images]
    assert [ax.get_ylabel() for ax in maps] == ["layer 9", ""]
    with pytest.raises(FlowlensError, match=r"layer 5 is not among the scores' layers \[4, 9\]"):
        heads_figure(data.raw[[4, 9]], data.layout, layer_ids=[4, 9], layers=[5], query_label="a0", step=2)


def test_actions_figure_one_panel_per_layer(data):
    act = data.layout.actions
    rows = np.zeros((18, act.size, data.layout.n))
    rows[:, :, act.start : act.stop] = data.actions
    fig = actions_figure(rows, data.layout, layer_ids=range(18), layers=[0, 17], step=1, heads_label="heads: mean")
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == ["layer 0", "layer 17"]
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), data.actions[17])


def test_steps_figure_needs_two_steps_and_titles_each(data):
    scores = data.raw_steps[:, 17].mean(axis=1)  # [step, token]
    cfg = FigureConfig(method="raw attention", value_label="attention mass")
    fig = steps_figure(scores, data.layout, data.images, layer=17, times=(1.0, 0.9, 0.8), config=cfg)
    assert "layer 17" in fig._suptitle.get_text() and "raw attention" in fig._suptitle.get_text()
    with pytest.raises(FlowlensError, match="every denoising step"):
        steps_figure(scores[:1], data.layout, layer=17)


def test_outcome_figure_uses_each_episode_frame_of_the_first_valid_camera(data):
    fig = outcome_figure(
        data.rollout[17],
        data.rollout[0],
        (data.layout, data.layout),
        (data.images, {}),
        frame_index=3,
        value_label="rollout relevance",
        title="success vs failure",
    )
    assert fig._suptitle.get_text() == "success vs failure"


def _steps_maps(fig):
    return [ax for ax in fig.axes if ax.images and ax.get_title().startswith("step")]


def test_steps_figure_shows_step_0_then_differences_on_a_diverging_scale(data):
    from flowlens.projection import patch_grid

    scores = data.raw_steps[:, 17].mean(axis=1)  # [step, token], 3 steps
    fig = steps_figure(scores, data.layout, data.images, layer=17, times=(1.0, 0.9, 0.8))
    maps = _steps_maps(fig)
    assert [ax.get_title() for ax in maps] == [
        "step 0 (t=1.00)",
        "step 1 (t=0.90) − step 0",
        "step 2 (t=0.80) − step 0",
    ]
    assert maps[0].images[-1].get_cmap().name == "inferno"
    grids = patch_grid(scores, data.layout, "base_0_rgb")
    change = np.nanmax(np.abs(grids - grids[:1]))
    for ax in maps[1:]:
        heat = ax.images[-1]
        assert heat.get_cmap().name == "RdBu_r"
        assert heat.get_clim() == pytest.approx((-change, change))
    said = " ".join(t.get_text() for sub in fig.subfigs for t in sub.texts)
    assert f"largest change from step 0 {change:.2g}" in said and "it changes across steps" in said


def test_steps_figure_says_when_the_maps_are_constant(data):
    scores = np.repeat(data.raw_steps[:1, 17].mean(axis=1), 3, axis=0)
    scores[1:, : data.layout.prefix_len] *= 1 + 1e-4  # a 0.01 % change: what rollout at layer 17 shows
    fig = steps_figure(scores, data.layout, data.images, layer=17)
    said = " ".join(t.get_text() for sub in fig.subfigs for t in sub.texts)
    assert "constant across steps" in said and "0.0 %" in said


def test_heads_figure_per_head_scale_and_both_cameras(data):
    from flowlens.projection import patch_grid

    cfg = FigureConfig(head_scale="head")
    cams = ["base_0_rgb", "left_wrist_0_rgb"]
    fig = heads_figure(
        data.raw, data.layout, data.images, layer_ids=range(18), layers=[0, 17], query_label="a0", step=0,
        config=cfg, cameras=cams,
    )
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 2 * 2 * 2  # cameras × layers × heads
    assert [sub.get_suptitle() for sub in fig.subfigs] == [f"camera: {c}" for c in cams]
    for k, ax in enumerate(maps):
        cam, layer, head = cams[k // 4], (0, 17)[(k // 2) % 2], k % 2
        top = np.nanmax(patch_grid(data.raw[layer, head], data.layout, cam))
        assert ax.images[-1].get_clim() == pytest.approx((0.0, top))
        assert ax.get_xlabel() == f"max {top:.2g}"
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2 and all("each panel's own max" in b.get_ylabel() for b in bars)
    assert "each panel on its own scale" in fig.get_suptitle()
    with pytest.raises(FlowlensError, match="head_scale"):
        FigureConfig(head_scale="panel")


def test_actions_figure_says_the_share_going_to_the_prefix(data):
    act, p = data.layout.actions, data.layout.prefix_len
    rows = np.zeros((18, act.size, data.layout.n))
    rows[:, :, act.start : act.stop] = 0.25 / act.size
    rows[:, :, :p] = 0.75 / p  # three quarters of every action's mass on images and words
    rows[17, :, :p] = 0.0
    rows[17, :, act.start : act.stop] = 1.0 / act.size
    fig = actions_figure(rows, data.layout, layer_ids=range(18), layers=[0, 17], step=1, heads_label="heads: mean")
    labels = [ax.get_xlabel() for ax in fig.axes if ax.images]
    assert labels == ["key action\n75 % to the prefix", "key action\n0 % to the prefix"]
    assert "share of the action tokens' attention that goes to the prefix" in fig.get_suptitle()
    assert min(t.get_fontsize() for t in fig.axes[0].get_xticklabels()) >= 9


def test_outcome_figure_draws_one_row_per_camera_both_runs_saw_and_names_the_absent(data):
    fig = outcome_figure(
        data.rollout[17],
        data.rollout[0],
        (data.layout, data.layout),
        (data.images, data.images),
        frame_index=3,
        value_label="rollout relevance",
        title="success vs failure",
    )
    maps = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(maps) == 6  # base and left wrist: success, failure, difference each
    assert [ax.get_ylabel() for ax in maps[::3]] == ["base", "left wrist"]
    assert [ax.images[-1].get_cmap().name for ax in maps] == ["inferno", "inferno", "RdBu_r"] * 2
    heat = {ax.images[-1].get_clim() for i, ax in enumerate(maps) if i % 3 != 2}
    diff = {ax.images[-1].get_clim() for i, ax in enumerate(maps) if i % 3 == 2}
    assert len(heat) == 1 and len(diff) == 1  # one scale for every camera, stated under the figure
    lo, hi = diff.pop()
    assert lo == pytest.approx(-hi) and hi > 0
    assert all(len(ax.images) == 2 for ax in maps[2::3])  # the frame under each difference map
    note = fig._supxlabel.get_text()
    assert note.startswith("cameras: base, left wrist") and "one symmetric scale" in note
    assert "absent: right wrist" in note
    assert fig._suptitle.get_text() == "success vs failure"
