import numpy as np
import pytest

from flowlens.errors import FlowlensError
from flowlens.figures import (
    action_columns,
    action_matrix,
    action_matrix_grid,
    head_grid,
    head_statistic,
    head_word_grid,
    layer_strip,
)
from flowlens.figures.evolution import group_shares


def test_layer_strip_covers_all_18_layers_on_one_scale(data):
    fig = layer_strip(
        data.rollout, data.layout, image=data.images["base_0_rgb"], title="rollout · all layers"
    )
    maps = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in maps] == [f"layer {i}" for i in range(18)]
    clims = {ax.images[-1].get_clim() for ax in maps}
    assert len(clims) == 1
    seg = data.layout.cameras[0]
    assert clims.pop()[1] == pytest.approx(np.nanmax(data.rollout[:, seg.start : seg.stop]))
    cb = fig._flowlens_colorbar
    assert cb.ax.get_ylabel() == "attention mass"
    assert len(fig.axes) == 18 + 1  # panels + colorbar


def test_head_grid_layers_by_heads_shared_scale(data):
    sel = data.raw[[0, 9, 17]]  # [3 layers, 2 heads, token]
    fig = head_grid(sel, data.layout, layer_ids=[0, 9, 17], image=data.images["base_0_rgb"], title="heads")
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 6
    assert [maps[i].get_title() for i in (0, 1)] == ["head 0", "head 1"]
    assert [maps[i].get_ylabel() for i in (0, 2, 4)] == ["layer 0", "layer 9", "layer 17"]
    assert len({ax.images[-1].get_clim() for ax in maps}) == 1


def test_head_word_grid_shares_y(data):
    fig = head_word_grid(data.raw[[0, 17]], data.layout, layer_ids=[0, 17])
    cells = [ax for ax in fig.axes if ax.patches]
    assert len(cells) == 4
    assert len({ax.get_ylim() for ax in cells}) == 1
    bottom = cells[-1]
    assert [t.get_text() for t in bottom.get_xticklabels()][-2:] == ["<bos>", "\\n"]


def test_head_statistic(data):
    names, shares = group_shares(data.raw, data.layout)  # [layer, head, group]
    ax = head_statistic(shares[..., names.index("base_0_rgb")], title="share on base camera")
    assert ax.images[0].get_array().shape == (18, 2)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["head 0", "head 1"]
    assert len(ax.texts) == 36
    with pytest.raises(FlowlensError, match="head_labels"):
        head_statistic(np.zeros((2, 3)), head_labels=["a"])


def test_action_matrices(data):
    ax = action_matrix(data.actions[-1], title="layer 17 · step 0")
    assert ax.images[0].get_array().shape == (50, 50)
    assert [t.get_text() for t in ax.get_xticklabels()][:3] == ["a0", "a5", "a10"]
    assert ax.get_xlabel().startswith("key action")
    fig = action_matrix_grid(data.actions[[0, 17]], panel_labels=["layer 0", "layer 17"], title="a→a")
    mats = [a for a in fig.axes if a.images]
    assert [a.get_title() for a in mats] == ["layer 0", "layer 17"]
    assert len({a.images[0].get_clim() for a in mats}) == 1


def test_action_block_takes_action_columns(data):
    p, act = data.layout.prefix_len, data.layout.actions
    rows = data.capture.step(0).probs[0, 0, act.start - p : act.stop - p]
    np.testing.assert_array_equal(action_columns(rows, data.layout), rows[:, act.start : act.stop])
    with pytest.raises(FlowlensError, match="horizon=50"):
        action_columns(rows[:3], data.layout)
