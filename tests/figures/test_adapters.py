"""The thin adapters from flowlens.analysis records to figures (real analysis outputs, toy capture)."""

import numpy as np
import pytest

from flowlens import TokenGraph, rollout
from flowlens.figures import action_attention_grid, head_stats_grid, rollout_strip, step_rollout_strip
from flowlens.testing import synthetic_capture


@pytest.fixture(scope="module")
def toy():
    return synthetic_capture("toy", num_layers=4, num_heads=2, num_steps=3)


def test_rollout_strip(toy):
    r = rollout(TokenGraph.from_capture(toy, 1))
    fig = rollout_strip(r)
    maps = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in maps] == ["layer 0", "layer 1", "layer 2", "layer 3"]
    assert fig._suptitle.get_text() == "rollout · query: action tokens · step 1 · heads: mean"


def test_step_rollout_strip(toy):
    from flowlens.analysis.step_rollout import rollout_all_steps

    fig = step_rollout_strip(rollout_all_steps(toy))
    maps = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in maps] == ["step 0 (t=1.00)", "step 1 (t=0.67)", "step 2 (t=0.33)"]
    assert "after layer 3" in fig._suptitle.get_text()


def test_head_stats_grid(toy):
    from flowlens.analysis.heads import head_stats

    fig = head_stats_grid(head_stats(toy, step=2))
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 4 * 2
    assert maps[0].get_ylabel() == "layer 0" and maps[1].get_title() == "head 1"
    assert "step 2" in fig._suptitle.get_text()


def test_action_attention_grid(toy):
    from flowlens.analysis.actions import action_attention

    attn = action_attention(toy, step=0)
    fig = action_attention_grid(attn)
    mats = [ax for ax in fig.axes if ax.images]
    assert len(mats) == 4
    np.testing.assert_allclose(mats[0].images[0].get_array(), attn.values[0].mean(axis=0))
    fig1 = action_attention_grid(attn, head=1)
    assert "head 1" in fig1._suptitle.get_text()
