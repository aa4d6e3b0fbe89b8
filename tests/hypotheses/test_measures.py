"""Attention mass and rollout share between selections, on a hand-built graph with known values."""

import numpy as np
import pytest

from flowlens import FlowlensError
from flowlens.core.graph import TokenGraph
from flowlens.core.openpi_layout import pi05_layout
from flowlens.hypotheses import mass, rollout_share
from flowlens.hypotheses.measures import tokens


def uniform_graph(num_layers=2, heads=None):
    """Every valid query attends uniformly to every valid key (rows need not be causal here)."""
    lay = pi05_layout("pick up the red cube", grid=(2, 2), max_token_len=10, action_horizon=3)
    valid = lay.valid.astype(np.float64)
    row = valid / valid.sum()
    att = np.broadcast_to(row, (num_layers, 1, lay.n, lay.n)).copy()
    att[:, :, ~lay.valid] = 0.0
    g = TokenGraph.from_attention(lay, att)
    return lay, g


def test_mass_of_uniform_rows_is_the_key_share():
    lay, g = uniform_graph()
    m = int(lay.valid.sum())
    words = len(lay.select(group="words"))
    assert mass(g, "actions", "words") == pytest.approx(words / m)
    assert mass(g, "actions", ["words", "bos"]) == pytest.approx((words + 1) / m)
    assert mass(g, {"kind": "action", "horizon": 0}, {"words": "red"}, per_layer=True) == pytest.approx([1 / m] * 2)


def test_rollout_share_of_uniform_attention():
    # T = 0.5·U + 0.5·I with U rank one (every row u): e_q T² = 0.25 e_q + 0.75 u, so an action row puts
    # 0.75·|words|/m on the words.
    lay, g = uniform_graph()
    m = int(lay.valid.sum())
    words = len(lay.select(group="words"))
    assert rollout_share(g, "actions", "words") == pytest.approx(0.75 * words / m)
    assert rollout_share(g, "actions", "actions") == pytest.approx(0.25 + 0.75 * 3 / m)


def test_per_head_mass_keeps_the_head_axis():
    lay = pi05_layout("pick up the red cube", grid=(2, 2), max_token_len=10, action_horizon=3)
    att = np.zeros((1, 2, lay.n, lay.n))
    words = lay.select(group="words")
    base = lay.select(group="base_0_rgb")
    att[:, 0, :, words[0]] = 1.0  # head 0: everything on the first word
    att[:, 1, :, base[0]] = 1.0   # head 1: everything on the first patch
    g = TokenGraph.from_attention(lay, att, heads="keep")
    np.testing.assert_allclose(mass(g, "base_0_rgb", "words"), [1.0, 0.0])


def test_selections_fail_with_the_layout_error():
    lay, g = uniform_graph()
    with pytest.raises(FlowlensError, match="Did you mean 'words'"):
        mass(g, "actions", "word")
    with pytest.raises(FlowlensError, match="token selection"):
        tokens(lay, [1.5])
