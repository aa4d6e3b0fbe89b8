import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from flowlens.errors import FlowlensError
from flowlens.analysis.rows import action_group_mass
from flowlens.io.batch import BatchRun, FrameSpec, plan_frames, run_batch
from flowlens.io.sources import write_episode, write_video
from flowlens.testing import synthetic_capture, synthetic_group_mass


def make_specs(episodes=3, frames=5, **options):
    return [
        FrameSpec(f"ep{e}", f, None, tuple(sorted(options.items())))
        for e in range(episodes)
        for f in range(frames)
    ]


def test_action_group_mass_sums_to_one():
    c = synthetic_capture("toy", seed=1, num_layers=3, num_heads=2, num_steps=2)
    df = pd.DataFrame(action_group_mass(c))
    assert set(df.group) == set(c.layout.groups())
    sums = df.groupby(["step", "layer"]).mass.sum()
    assert len(sums) == 6 and np.allclose(sums, 1.0, atol=1e-5)


def test_uninterrupted_run_tables(tmp_path):
    specs = make_specs()
    res = run_batch(synthetic_group_mass, specs, tmp_path / "out", chunk_size=4, progress=False)
    t = res.table
    assert (res.computed, res.skipped) == (15, 0)
    assert list(t.columns[:2]) == ["episode", "frame"] and {"step", "layer", "group", "mass"} <= set(
        t.columns
    )
    assert list(dict.fromkeys(zip(t.episode, t.frame, strict=True))) == [(s.episode, s.frame) for s in specs]
    pd.testing.assert_frame_equal(pd.read_parquet(res.parquet), t)
    pd.testing.assert_frame_equal(pd.read_csv(res.csv), t, check_dtype=False)
    assert sorted(p.name for p in (tmp_path / "out" / "chunks").iterdir()) == [
        f"chunk-{i:05d}.parquet" for i in range(4)
    ]
    assert not list((tmp_path / "out" / "parts").iterdir())
    again = run_batch(synthetic_group_mass, specs, tmp_path / "out", chunk_size=4, progress=False)
    assert (again.computed, again.skipped) == (0, 15)
    pd.testing.assert_frame_equal(again.table, t)


def test_raise_at_frame_k_then_resume_gives_same_tables(tmp_path):
    specs = make_specs()
    ref = run_batch(synthetic_group_mass, specs, tmp_path / "ref", chunk_size=4, progress=False)
    calls = []

    def flaky(spec):
        calls.append(spec.key)
        if len(calls) == 7 and not os.environ.get("NEVER"):
            raise RuntimeError("boom at frame k")
        return synthetic_group_mass(spec)

    with pytest.raises(RuntimeError, match="boom"):
        run_batch(flaky, specs, tmp_path / "out", chunk_size=4, progress=False)
    assert not (tmp_path / "out" / "results.parquet").exists()
    res = run_batch(flaky, specs, tmp_path / "out", chunk_size=4, progress=False)
    assert (res.computed, res.skipped) == (9, 6)
    assert calls[7:] == [s.key for s in specs[6:]]  # resumed exactly at the failed frame
    pd.testing.assert_frame_equal(res.table, ref.table)
    assert (tmp_path / "out" / "results.csv").read_bytes() == ref.csv.read_bytes()
    assert (tmp_path / "out" / "results.parquet").read_bytes() == ref.parquet.read_bytes()


def test_skip_errors_then_retry(tmp_path):
    specs = make_specs(episodes=1, frames=4)

    def bad_frame_2(spec):
        if spec.frame == 2:
            raise ValueError("bad frame")
        return [{"x": spec.frame}]

    res = run_batch(bad_frame_2, specs, tmp_path / "o", chunk_size=2, on_error="skip", progress=False)
    assert [e["frame"] for e in res.errors] == [2] and list(res.table.frame) == [0, 1, 3]
    assert json.loads((tmp_path / "o" / "errors.jsonl").read_text().splitlines()[0])["key"] == "ep0__f000002"
    # the fixed function is another function: resuming with it must be asked for
    res = run_batch(
        lambda s: [{"x": s.frame}], specs, tmp_path / "o", chunk_size=2, progress=False, allow_fn_change=True
    )
    assert (res.computed, list(res.table.x)) == (1, [0, 1, 2, 3])


def test_sigkill_then_resume_gives_same_tables(tmp_path):
    # The job SIGKILLs itself inside the per-frame function of frame k = 7 (no cleanup can run).
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent("""
        import os, signal, sys
        from flowlens.io.batch import FrameSpec, run_batch
        from flowlens.testing import synthetic_group_mass
        def fn(spec):
            if sys.argv[2] == "kill" and spec.key == "ep0__f000007":
                os.kill(os.getpid(), signal.SIGKILL)
            return synthetic_group_mass(spec)
        specs = [FrameSpec(f"ep{e}", f) for e in range(2) for f in range(8)]
        run_batch(fn, specs, sys.argv[1], chunk_size=3, progress=False)
    """)
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ref"), "run"], check=True, env=env, timeout=60
    )
    killed = subprocess.run([sys.executable, str(script), str(tmp_path / "out"), "kill"], env=env, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "out" / "results.parquet").exists()
    run = BatchRun(
        tmp_path / "out", [FrameSpec(f"ep{e}", f) for e in range(2) for f in range(8)], chunk_size=3
    )
    assert [s.key for s in run.pending()][:1] == ["ep0__f000007"] and len(run.pending()) == 9
    assert len(list((tmp_path / "out" / "chunks").glob("*.parquet"))) == 2  # frames 0-5; frame 6 is a part
    run.close()  # one run per folder: release it before the resumed run starts
    subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out"), "run"], check=True, env=env, timeout=60
    )
    assert (tmp_path / "out" / "results.csv").read_bytes() == (tmp_path / "ref" / "results.csv").read_bytes()
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "out" / "results.parquet"),
        pd.read_parquet(tmp_path / "ref" / "results.parquet"),
    )


def test_workers_match_serial(tmp_path):
    specs = make_specs(episodes=2, frames=4)
    serial = run_batch(synthetic_group_mass, specs, tmp_path / "a", chunk_size=3, progress=False)
    par = run_batch(synthetic_group_mass, specs, tmp_path / "b", chunk_size=3, workers=2, progress=False)
    pd.testing.assert_frame_equal(serial.table, par.table)
    with pytest.raises(FlowlensError, match="picklable"):
        run_batch(lambda s: [], specs, tmp_path / "c", workers=2, progress=False)


def test_plan_guards(tmp_path):
    specs = make_specs(episodes=1, frames=3)
    run_batch(lambda s: [{"v": 1}], specs, tmp_path / "o", progress=False)
    with pytest.raises(FlowlensError, match="different plan"):
        run_batch(lambda s: [{"v": 1}], make_specs(episodes=1, frames=4), tmp_path / "o", progress=False)
    with pytest.raises(FlowlensError, match="appears twice"):
        BatchRun(tmp_path / "p", specs + specs[:1])
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "thesis.tex").write_text("precious")
    with pytest.raises(FlowlensError, match="non-empty folder"):
        run_batch(lambda s: [], specs, tmp_path / "user", progress=False)
    with pytest.raises(FlowlensError, match="list of dicts"):
        run_batch(lambda s: 3, specs, tmp_path / "q", progress=False)
    with pytest.raises(FlowlensError, match="disagrees"):
        run_batch(lambda s: [{"frame": 99}], specs, tmp_path / "r", progress=False)


def test_plan_frames_over_sources(tmp_path):
    frames = np.zeros((7, 16, 16, 3), np.uint8)
    v = write_video(tmp_path / "rollout_pick_it_success.mp4", frames)
    e = write_episode(tmp_path / "ep", {"base_0_rgb": frames[:4]}, prompt="a")
    specs = plan_frames([v, e], every=3)
    assert [(s.episode, s.frame) for s in specs] == [
        ("rollout_pick_it_success", 0),
        ("rollout_pick_it_success", 3),
        ("rollout_pick_it_success", 6),
        ("ep", 0),
        ("ep", 3),
    ]
    assert specs[0].source == str(v)
    dup = plan_frames([v, v], frames=[1, 50], prompt="x")
    assert [(s.episode, s.frame) for s in dup] == [
        ("rollout_pick_it_success", 1),
        ("rollout_pick_it_success_2", 1),
    ]
    assert dup[0].option("prompt") == "x"


def test_spec_loads_its_frame(tmp_path):
    frames = np.stack([np.full((16, 16, 3), 10 * i, np.uint8) for i in range(4)])
    v = write_video(tmp_path / "rollout_pick_it_success.mp4", frames, lossless=True)
    specs = plan_frames([v], prompt="custom")
    f = specs[2].load_frame()
    assert (f.index, f.prompt) == (2, "custom")
    np.testing.assert_array_equal(f.images["base_0_rgb"], frames[2])
    assert specs[3].open_episode() is specs[0].open_episode()  # cached
    d = tmp_path / "videos"
    write_video(d / "rollout_task3_ep0.mp4", frames)
    (spec,) = plan_frames([d / "rollout_task3_ep0.mp4"], frames=[1], task_prompts={3: "open it"})
    assert spec.load_frame().prompt == "open it"  # dict-valued options work
    with pytest.raises(FlowlensError, match="has no source"):
        FrameSpec("x", 0).load_frame()
