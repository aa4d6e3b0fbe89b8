"""On the embedded model: sweeps score frames exactly as the task's own evaluation does."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from flowlens.causal import PatchSite, heading_score, knockout_sweep, patch_sweep
from flowlens.model import Knockout
from flowlens.model.pi0 import Pi0Model

pytestmark = pytest.mark.slow


@functools.cache
def _task(n: int = 3):
    from flowlens.tasks.tabletop.builtin import load_builtin, load_builtin_norm_stats
    from flowlens.tasks.tabletop.evaluate import _obs, held_out_cases

    config, params, tok = load_builtin("tabletop")
    stats = load_builtin_norm_stats("tabletop")
    cases = held_out_cases(n)
    frames = [_obs(c, c.scene.prompt, tok, config, stats) for c in cases]
    return Pi0Model(config), params, stats, cases, frames


def test_knockout_sweep_scores_match_evaluate_policy():
    from flowlens.tasks.tabletop.evaluate import evaluate_policy

    model, params, stats, cases, frames = _task()
    kos = {"none": [], "cameras-x-words": [Knockout(["base_0_rgb", "left_wrist_0_rgb"], "words")]}
    table = knockout_sweep(model, params, frames, kos, score=heading_score(cases, stats, model.config))
    for name, edit in kos.items():
        rows = table[table.intervention == name]
        want = evaluate_policy(model, params, _task_tok(), stats, cases, knockouts=edit, swap=False)
        assert rows.hit.mean() == want["accuracy"]
        assert float(np.mean(rows.cosine_named.to_numpy())) == pytest.approx(want["mean_cosine"], abs=1e-5)
        np.testing.assert_array_equal(rows.miss, ~rows.hit)
    assert (table[table.intervention == "none"].l2 == 0).all()
    assert (table[table.intervention == "cameras-x-words"].l2 > 0).all()


def _task_tok():
    from flowlens.tasks.tabletop.builtin import load_builtin

    return load_builtin("tabletop")[2]


def test_patch_sweep_on_the_embedded_model():
    model, params, stats, cases, frames = _task()
    score = heading_score(cases, stats, model.config)
    same = patch_sweep(model, params, frames, frames, [PatchSite(5, "prefix", "words"), PatchSite(3, 4, "actions")],
                       score=score)
    assert (same.l2 == 0).all()
    np.testing.assert_array_equal(same.hit, same.base_hit)
    # another frame of the same episode (same prompt, so the same layout) as the corrupted input
    from flowlens.tasks.tabletop.evaluate import _obs

    c = cases[0]
    later = _obs(type(c)(c.episode, c.t + 3, c.swap), c.scene.prompt, _task_tok(), model.config, stats)
    table = patch_sweep(model, params, frames[:1], [later], [PatchSite(0, "prefix"), PatchSite(18, 9)])
    np.testing.assert_array_equal(table.gap_closed.to_numpy()[0], 1.0)  # Pi0.5: the prefix is the whole input
    assert table.l2.to_numpy()[0] > 0
