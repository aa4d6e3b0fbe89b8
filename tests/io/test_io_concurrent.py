"""Two writers on one folder (issue 14, items 1 and 6): a batch folder has one run at a time, a
second fails naming the holder; a store takes concurrent writers; nothing is ever marked done
without its rows, and resuming with another per-frame function is refused."""

import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from flowlens.errors import FlowlensError
from flowlens.io.batch import BatchRun, FrameSpec, run_batch
from flowlens.testing import synthetic_group_mass
from flowlens.io.store import open_store

SPECS = [FrameSpec(f"ep{e}", f) for e in range(2) for f in range(6)]


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


RACE = textwrap.dedent("""
    # Run in a fresh interpreter (no JAX threads yet), so forking two writers per trial is safe.
    import json, multiprocessing, sys, time, traceback
    from pathlib import Path

    from flowlens.errors import FlowlensError
    from flowlens.io.batch import FrameSpec, run_batch
    from flowlens.io.store import open_store
    from flowlens.testing import synthetic_capture, synthetic_group_mass

    SPECS = [FrameSpec(f"ep{e}", f) for e in range(2) for f in range(6)]

    def slow_group_mass(spec):
        time.sleep(0.002)
        return synthetic_group_mass(spec)

    def batch_child(folder, conn):
        try:
            run_batch(slow_group_mass, SPECS, folder, chunk_size=4, progress=False)
            conn.send("ok")
        except FlowlensError as e:
            conn.send("busy" if " is in use by " in str(e) else f"error: {e}")
        except BaseException:
            conn.send(traceback.format_exc())

    def store_child(folder, conn):
        try:
            store = open_store(folder)
            for k in range(6):
                if f"k{k}" not in store:
                    cap = synthetic_capture("toy", seed=k, num_layers=2, num_heads=2, num_steps=1)
                    store.put(f"k{k}", cap, overwrite=True)
            conn.send("ok")
        except BaseException:
            conn.send(traceback.format_exc())

    root, kind, trials = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    target = batch_child if kind == "batch" else store_child
    ctx = multiprocessing.get_context("fork")
    outcomes = []
    for t in range(trials):
        pipes, procs = [], []
        for _ in range(2):
            recv, send = ctx.Pipe(duplex=False)
            procs.append(ctx.Process(target=target, args=(root / f"{kind}{t}", send)))
            pipes.append(recv)
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        pair = [r.recv() if r.poll(1) else f"exit {p.exitcode}" for r, p in zip(pipes, procs)]
        if kind == "batch":  # resume: everything must be there already
            again = run_batch(slow_group_mass, SPECS, root / f"batch{t}", chunk_size=4, progress=False)
            pair.append([again.computed, again.skipped, again.csv.read_text()])
        outcomes.append(pair)
    print(json.dumps(outcomes))
""")


def _race(tmp_path, kind, trials):
    script = tmp_path / "race.py"
    script.write_text(RACE)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path), kind, str(trials)],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check_batch_trials(tmp_path, trials):
    ref = run_batch(synthetic_group_mass, SPECS, tmp_path / "ref", chunk_size=4, progress=False).csv.read_text()
    outcomes = _race(tmp_path, "batch", trials)
    for t, (*pair, (computed, skipped, csv)) in enumerate(outcomes):
        assert set(pair) <= {"ok", "busy"} and "ok" in pair, (t, pair)
        assert (computed, skipped) == (0, 12), t
        assert csv == ref, t


def _check_store_trials(tmp_path, trials):
    outcomes = _race(tmp_path, "store", trials)
    for t, pair in enumerate(outcomes):
        assert pair == ["ok", "ok"], (t, pair)
        store = open_store(tmp_path / f"store{t}", mode="r")
        assert sorted(store.keys()) == [f"k{k}" for k in range(6)] and store.problems == [], t
        assert store.verify() == []
        assert not list((tmp_path / f"store{t}" / "entries").glob("*.corrupt-*")), t


def test_two_processes_on_one_folder_lose_nothing(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "s").mkdir()
    _check_batch_trials(tmp_path / "b", 3)
    _check_store_trials(tmp_path / "s", 3)


@pytest.mark.slow
def test_two_processes_on_one_folder_lose_nothing_20_trials(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "s").mkdir()
    _check_batch_trials(tmp_path / "b", 20)
    _check_store_trials(tmp_path / "s", 20)
