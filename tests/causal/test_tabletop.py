"""On the embedded model: sweeps score frames exactly as the task's own evaluation does."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from flowlens.causal import PatchSite, case_frames, heading_score, knockout_sweep, load_task, patch_sweep
from flowlens.errors import FlowlensError
from flowlens.model import Knockout

pytestmark = pytest.mark.slow


@functools.cache
def _task(n: int = 3):
    from flowlens.tasks.tabletop.evaluate import held_out_cases

    model, params, tok, stats = load_task()
    cases = held_out_cases(n)
    return model, params, tok, stats, cases, case_frames(cases, tok, model.config, stats)


def test_knockout_sweep_scores_match_evaluate_policy():
    from flowlens.tasks.tabletop.evaluate import evaluate_policy

    model, params, tok, stats, cases, frames = _task()
    kos = {"none": [], "cameras-x-words": [Knockout(["base_0_rgb", "left_wrist_0_rgb"], "words")]}
    table = knockout_sweep(model, params, frames, kos, score=heading_score(cases, stats, model.config))
    for name, edit in kos.items():
        rows = table[table.intervention == name]
        want = evaluate_policy(model, params, tok, stats, cases, knockouts=edit, swap=False)
        assert rows.hit.mean() == want["accuracy"]
        assert float(np.mean(rows.cosine_named.to_numpy())) == pytest.approx(want["mean_cosine"], abs=1e-5)
        np.testing.assert_array_equal(rows.miss, ~rows.hit)
    assert (table[table.intervention == "none"].l2 == 0).all()
    assert (table[table.intervention == "cameras-x-words"].l2 > 0).all()


def test_patch_sweep_on_the_embedded_model():
    model, params, tok, stats, cases, frames = _task()
    score = heading_score(cases, stats, model.config)
    same = patch_sweep(model, params, frames, frames, [PatchSite(5, "prefix", "words"), PatchSite(3, 4, "actions")],
                       score=score)
    assert (same.l2 == 0).all()
    np.testing.assert_array_equal(same.hit, same.base_hit)
    # another frame of the same episode (same prompt, so the same layout) as the corrupted input
    later = case_frames(cases[:1], tok, model.config, stats, offset=3)
    table = patch_sweep(model, params, frames[:1], later, [PatchSite(0, "prefix"), PatchSite(18, 9)])
    np.testing.assert_array_equal(table.gap_closed.to_numpy()[0], 1.0)  # Pi0.5: the prefix is the whole input
    assert table.l2.to_numpy()[0] > 0


def test_case_frames_check_their_arguments():
    model, params, tok, stats, cases, frames = _task()
    with pytest.raises(FlowlensError, match="prompts has 1 entries for 3 cases"):
        case_frames(cases, tok, model.config, stats, prompts=["x"])
    with pytest.raises(FlowlensError, match="pick a smaller offset"):
        case_frames(cases[:1], tok, model.config, stats, offset=10_000)
