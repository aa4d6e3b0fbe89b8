"""Knockout sweeps: massless edges change nothing, batched rows equal one-frame runs, names and errors."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import causal_kit as ck  # noqa: E402

from flowlens.causal import edge_knockouts, knockout_sweep, sliding_windows  # noqa: E402
from flowlens.errors import FlowlensError  # noqa: E402
from flowlens.model import Knockout, sample_actions  # noqa: E402

NAME = "test_tiny"


def test_windows_and_names():
    assert sliding_windows(6, 3, 3) == [range(0, 3), range(3, 6)]
    assert sliding_windows(4, 2) == [range(0, 2), range(1, 3), range(2, 4)]
    kos = edge_knockouts("actions", "words", windows=[range(0, 2), [5]], heads=[0, 1], steps=[3, ("prefix", 0)])
    assert list(kos)[:3] == ["L0-1/h0/s3", "L0-1/h0/sprefix,0", "L0-1/h1/s3"] and len(kos) == 8
    assert kos["L5/h1/s3"] == Knockout("actions", "words", layers=[5], heads=[1], steps=(3,))
    assert list(edge_knockouts("actions", "words")) == ["all"]
    with pytest.raises(FlowlensError, match="width <= num_layers"):
        sliding_windows(4, 5)


@pytest.mark.slow
def test_sweep_rows_equal_one_frame_runs_and_massless_edges_change_nothing():
    model, params = ck.kit.model(NAME), ck.kit.params(NAME)
    # frames 0, 2: one layout; frame 1: another (all cameras, shorter prompt) -> two batches
    frames = [ck.frame(NAME, 0), ck.frame(NAME, 0, element=1), ck.frame(NAME, 1)]
    noise = ck.noise(NAME, 3)
    lay = model.layout(frames[0], 0)
    kos = {"padding": Knockout("actions", np.flatnonzero(~lay.valid & ~model.layout(frames[1], 0).valid)),
           "words": [Knockout("actions", "words", layers=range(9, 18))],
           "words@s1": Knockout("actions", "words", steps=[1])}
    table = knockout_sweep(model, params, frames, kos, noise=noise, num_steps=ck.STEPS, batch_size=2)
    assert list(table.columns) == ["frame", "intervention", "l2", "cosine"] and len(table) == 9
    pad = table[table.intervention == "padding"]
    assert (pad.l2 == 0).all() and np.allclose(pad.cosine, 1.0)
    for f, obs in enumerate(frames):
        base, _ = sample_actions(model, params, obs, noise=noise[f:f + 1], num_steps=ck.STEPS)
        for name in ("words", "words@s1"):
            edited, _ = sample_actions(model, params, obs, noise=noise[f:f + 1], num_steps=ck.STEPS,
                                       knockouts=kos[name])
            row = table[(table.intervention == name) & (table.frame == f)].iloc[0]
            want = np.linalg.norm((edited - base).astype(np.float64))
            assert row.l2 == pytest.approx(want, rel=1e-4, abs=1e-6) and row.l2 > 0


@pytest.mark.slow
def test_score_columns_and_bad_inputs():
    model, params = ck.kit.model(NAME), ck.kit.params(NAME)
    frames = [ck.frame(NAME, 0), ck.frame(NAME, 1)]

    def score(idx, actions):
        return {"first": actions[:, 0, 0]}

    table = knockout_sweep(model, params, frames, {"none": []}, noise=ck.noise(NAME, 2), num_steps=ck.STEPS,
                           score=score)
    np.testing.assert_array_equal(table["first"], table["base_first"])
    assert (table.l2 == 0).all()
    with pytest.raises(FlowlensError, match="Did you mean 'words'"):
        knockout_sweep(model, params, frames, {"x": Knockout("actions", "word")}, num_steps=ck.STEPS)
    with pytest.raises(FlowlensError, match="layer 25 out of range: the model has 18 layers"):
        knockout_sweep(model, params, frames, {"x": Knockout("actions", "words", layers=[25])}, num_steps=ck.STEPS)
    with pytest.raises(FlowlensError, match="Knockout.steps has step 3, but sampling runs 3"):
        knockout_sweep(model, params, frames, {"x": Knockout("actions", "words", steps=[3])}, num_steps=ck.STEPS)
    with pytest.raises(FlowlensError, match="frames must be a list of batch-1 Observations"):
        knockout_sweep(model, params, ck.kit.observation(NAME), {"x": []})
    with pytest.raises(FlowlensError, match="non-empty mapping"):
        knockout_sweep(model, params, frames, [Knockout("actions", "words")])
