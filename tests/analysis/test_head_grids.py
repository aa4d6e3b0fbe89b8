"""Layers × heads comparison grids (flowlens.analysis.head_grids)."""

import numpy as np
import pytest

from flowlens import FlowlensError
from flowlens.analysis.head_grids import head_grids, head_image_grid, head_word_grid
from flowlens.analysis.heads import head_stats
from flowlens.core import make_capture
from flowlens.testing import masked_softmax, synthetic_capture, toy_layout

LAYOUT = toy_layout()  # base_0_rgb 0-3 (2×2), left wrist masked, bos 8, words 9-12, newline 13, actions 17-19
N, P = LAYOUT.n, LAYOUT.prefix_len


def row(*tokens, weights=None):
    r = np.zeros(N, np.float32)
    r[list(tokens)] = weights if weights is not None else 1.0 / len(tokens)
    return r


def hand_capture(rows_per_layer):
    """rows_per_layer[l][h]: the row every suffix query of head h in layer l uses."""
    layers, heads = len(rows_per_layer), len(rows_per_layer[0])
    suffix = np.array([[np.stack([r] * (N - P)) for r in hs] for hs in rows_per_layer], np.float32)
    prefix = masked_softmax(np.zeros((layers, heads, P, P), np.float32), LAYOUT.attention_mask()[:P, :P])
    return make_capture(LAYOUT, prefix_probs=prefix, step_probs=[suffix])


CAP = hand_capture(
    [
        [row(0), row(3)],  # layer 0: one patch each
        [row(0, 1, 8, 13, weights=[0.1, 0.1, 0.4, 0.4]), row(9, 11, weights=[0.25, 0.75])],
    ]
)


def test_image_grid_one_hot_panels_and_shared_scale():
    grid = head_image_grid(CAP, "base_0_rgb")
    assert grid.kind == "image" and grid.values.shape == (2, 2, 2, 2)
    np.testing.assert_array_equal(grid.values[0, 0], [[1, 0], [0, 0]])
    np.testing.assert_array_equal(grid.values[0, 1], [[0, 0], [0, 1]])
    assert (grid.vmin, grid.vmax) == (0.0, 1.0)
    np.testing.assert_allclose(grid.layer_vmax, [1.0, 0.1], rtol=1e-6)
    assert grid.limits(1) == (0.0, 1.0)  # scale="grid": every row shares the grid limits
    assert grid.row_labels == ("layer 0", "layer 1") and grid.col_labels == ("head 0", "head 1")


def test_per_layer_scale_and_normalize():
    grid = head_image_grid(CAP, 0, scale="layer", normalize=True)
    assert grid.limits(1) == (grid.layer_vmin[1], grid.layer_vmax[1])
    np.testing.assert_allclose(grid.values[1, 0], [[0.5, 0.5], [0, 0]], rtol=1e-6)
    sums = grid.values.sum(axis=(-2, -1))
    np.testing.assert_allclose(sums[sums > 0], 1.0)
    assert grid.normalized


def test_word_grid_values_and_sinks_apart():
    grid = head_word_grid(CAP)
    assert grid.item_labels == ("pick", "the", "red", "bowl")
    np.testing.assert_allclose(grid.values[1, 1], [0.25, 0.0, 0.75, 0.0], rtol=1e-6)
    np.testing.assert_allclose(grid.specials["bos"][1, 0], 0.4, rtol=1e-6)
    np.testing.assert_allclose(grid.specials["newline"][1, 0], 0.4, rtol=1e-6)
    assert grid.vmax == pytest.approx(0.75)  # sinks (0.4) not in the word scale, words only


def test_head_grids_reuse_stats_and_query_selection():
    cap = synthetic_capture("toy", num_layers=3, num_heads=2, num_steps=2, seed=2)
    stats = head_stats(cap, step=1, horizon=0)
    grids = head_grids(stats, scale="layer")
    assert set(grids) == {"base_0_rgb", "words"}  # the masked wrist camera has no grid
    assert grids["base_0_rgb"].step == 1
    np.testing.assert_array_equal(grids["base_0_rgb"].query_tokens, [17])
    direct = head_image_grid(cap, step=1, horizon=0)
    np.testing.assert_allclose(direct.values, grids["base_0_rgb"].values)
    v = direct.values
    assert direct.vmin == v.min() and direct.vmax == v.max()
    np.testing.assert_allclose(direct.layer_vmax, v.reshape(3, -1).max(axis=1))


def test_errors():
    with pytest.raises(FlowlensError, match="masked"):
        head_image_grid(CAP, "left_wrist_0_rgb")
    with pytest.raises(FlowlensError, match="Did you mean 'layer'"):
        head_image_grid(CAP, scale="layr")
    with pytest.raises(FlowlensError, match="Did you mean 'base_0_rgb'"):
        head_image_grid(CAP, "base_rgb")
    with pytest.raises(FlowlensError, match="already HeadStats"):
        head_word_grid(head_stats(CAP), horizon=0)
