"""Frame batching: only frames whose selections resolve identically (same layout and prompt) share a call."""

import numpy as np

from flowlens.causal.batching import frame_batches, layout_key
from flowlens.core.openpi_layout import pi0_layout


def test_layout_key_separates_prompts_that_word_selections_read_differently():
    a = pi0_layout("pick up the red cube")
    b = pi0_layout("pick up the blue cube")  # same length and groups, other words
    assert np.array_equal(a.valid, b.valid)
    assert {k: v.tolist() for k, v in a.groups().items()} == {k: v.tolist() for k, v in b.groups().items()}
    assert layout_key(a) != layout_key(b)
    assert layout_key(a) == layout_key(pi0_layout("pick up the red cube"))


def test_frame_batches_group_by_key_then_cut():
    keys = ["x", "y", "x", "x", "y"]
    assert list(frame_batches(range(5), 2, keys)) == [[0, 2], [3], [1, 4]]
    assert list(frame_batches(range(5), 2)) == [[0, 1], [2, 3], [4]]
