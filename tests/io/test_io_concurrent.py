"""Two writers on one folder (issue 14, items 1 and 6): a batch folder has one run at a time, a
second fails naming the holder; a store takes concurrent writers; nothing is ever marked done
without its rows, and resuming with another per-frame function is refused."""

import multiprocessing
import os
import time
import traceback

import pandas as pd
import pytest

from flowlens.errors import FlowlensError
from flowlens.io.batch import BatchRun, FrameSpec, run_batch, synthetic_group_mass
from flowlens.io.store import open_store
from flowlens.testing import synthetic_capture

SPECS = [FrameSpec(f"ep{e}", f) for e in range(2) for f in range(6)]


def slow_group_mass(spec):
    time.sleep(0.002)
    return synthetic_group_mass(spec)


def other_fn(spec):
    return [{"x": spec.frame}]


def test_second_run_on_a_folder_fails_naming_the_holder(tmp_path):
    with BatchRun(tmp_path / "out", SPECS, chunk_size=4) as run:
        with pytest.raises(FlowlensError, match=rf"'{tmp_path}/out' is in use by pid {os.getpid()} on "):
            run_batch(synthetic_group_mass, SPECS, tmp_path / "out", chunk_size=4, progress=False)
        run.record(SPECS[0], synthetic_group_mass(SPECS[0]))
    res = run_batch(synthetic_group_mass, SPECS, tmp_path / "out", chunk_size=4, progress=False)
    assert (res.computed, res.skipped) == (11, 1)
    with pytest.raises(FlowlensError, match="was closed"):
        run.record(SPECS[1], [])


def test_resume_with_another_function_is_refused(tmp_path):
    run_batch(synthetic_group_mass, SPECS[:3], tmp_path / "out", progress=False)
    with pytest.raises(
        FlowlensError, match=r"per-frame function '.*synthetic_group_mass', but this run uses '.*other_fn'"
    ):
        run_batch(other_fn, SPECS[:3], tmp_path / "out", progress=False)
    assert run_batch(synthetic_group_mass, SPECS[:3], tmp_path / "out", progress=False).skipped == 3


def test_a_chunk_is_never_written_without_all_its_rows(tmp_path):
    with BatchRun(tmp_path / "out", SPECS, chunk_size=4) as run:
        for s in SPECS[:3]:
            run.record(s, synthetic_group_mass(s))
        (tmp_path / "out" / "parts" / f"{SPECS[1].key}.parquet").unlink()  # rows lost behind our back
        with pytest.raises(FlowlensError, match=rf"rows of frames \['{SPECS[1].key}'\] vanished"):
            run.record(SPECS[3], synthetic_group_mass(SPECS[3]))
        assert not (tmp_path / "out" / "chunks" / "chunk-00000.parquet").exists()
        assert [s.key for s in run.pending()][:1] == [SPECS[1].key]
    res = run_batch(synthetic_group_mass, SPECS, tmp_path / "out", chunk_size=4, progress=False)
    assert (res.computed, res.skipped) == (9, 3)
    ref = run_batch(synthetic_group_mass, SPECS, tmp_path / "ref", chunk_size=4, progress=False)
    pd.testing.assert_frame_equal(res.table, ref.table)


def _batch_child(out, conn):
    try:
        run_batch(slow_group_mass, SPECS, out, chunk_size=4, progress=False)
        conn.send("ok")
    except FlowlensError as e:
        conn.send("busy" if " is in use by " in str(e) else f"error: {e}")
    except BaseException:  # noqa: BLE001 - reported to the parent
        conn.send(traceback.format_exc())


def _store_child(root, seed, conn):
    try:
        store = open_store(root)
        for k in range(6):
            key = f"k{k}"
            if key not in store:
                store.put(key, synthetic_capture("toy", seed=k, num_layers=2, num_heads=2, num_steps=1), overwrite=True)
        conn.send("ok")
    except BaseException:  # noqa: BLE001
        conn.send(traceback.format_exc())


def _race(target, args_of, trials):
    ctx = multiprocessing.get_context("fork")
    outcomes = []
    for t in range(trials):
        pipes, procs = [], []
        for i in range(2):
            recv, send = ctx.Pipe(duplex=False)
            procs.append(ctx.Process(target=target, args=(*args_of(t, i), send)))
            pipes.append(recv)
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        outcomes.append([r.recv() if r.poll(1) else f"exit {p.exitcode}" for r, p in zip(pipes, procs, strict=True)])
    return outcomes


def _check_batch_trials(tmp_path, trials):
    ref = run_batch(synthetic_group_mass, SPECS, tmp_path / "ref", chunk_size=4, progress=False).table
    outcomes = _race(_batch_child, lambda t, i: (tmp_path / f"out{t}",), trials)
    for t, pair in enumerate(outcomes):
        assert set(pair) <= {"ok", "busy"} and "ok" in pair, (t, pair)
        again = run_batch(slow_group_mass, SPECS, tmp_path / f"out{t}", chunk_size=4, progress=False)
        assert (again.computed, again.skipped) == (0, 12), t
        pd.testing.assert_frame_equal(again.table, ref)


def _check_store_trials(tmp_path, trials):
    outcomes = _race(_store_child, lambda t, i: (tmp_path / f"s{t}", i), trials)
    for t, pair in enumerate(outcomes):
        assert pair == ["ok", "ok"], (t, pair)
        store = open_store(tmp_path / f"s{t}", mode="r")
        assert sorted(store.keys()) == [f"k{k}" for k in range(6)] and store.problems == [], t
        assert store.verify() == []
        assert not list((tmp_path / f"s{t}" / "entries").glob("*.corrupt-*")), t


def test_two_processes_on_one_folder_lose_nothing(tmp_path):
    _check_batch_trials(tmp_path / "batch", 3)
    _check_store_trials(tmp_path / "store", 3)


@pytest.mark.slow
def test_two_processes_on_one_folder_lose_nothing_20_trials(tmp_path):
    _check_batch_trials(tmp_path / "batch", 20)
    _check_store_trials(tmp_path / "store", 20)
