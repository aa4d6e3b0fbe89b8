"""Fixtures for the scale-out tests: a few episodes of the embedded tabletop task, made once."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tabletop_episodes(tmp_path_factory):
    """Four tabletop episode folders of the embedded task (scenes 0–3; 4, 4, 3, 5 frames at every 10th)."""
    from flowlens.tasks.tabletop import run_expert, sample_scene, write_episode_dir

    root = tmp_path_factory.mktemp("tabletop_episodes")
    return tuple(str(write_episode_dir(run_expert(sample_scene(i)), root / f"ep{i}")) for i in range(4))


@pytest.fixture(scope="session")
def assert_same_store():
    """Checks that two capture stores hold the same keys and, key by key, the same arrays."""

    def check(a, b) -> None:
        assert sorted(a.keys()) == sorted(b.keys())
        assert not a.problems and not b.problems
        for key in a.keys():
            ca, cb = a.get(key), b.get(key)
            assert len(ca.passes) == len(cb.passes), key
            for pa, pb in zip(ca.passes, cb.passes):
                assert (pa.kind, pa.step, pa.head_reduction) == (pb.kind, pb.step, pb.head_reduction), key
                np.testing.assert_array_equal(pa.probs, pb.probs, err_msg=key)
                np.testing.assert_array_equal(pa.query_rows, pb.query_rows, err_msg=key)
                np.testing.assert_array_equal(pa.layers, pb.layers, err_msg=key)
            assert ca.layout.to_dict() == cb.layout.to_dict(), key

    return check
