"""Local batch runs without Ray: two concurrent processes on one store lose and corrupt nothing, and
with ``import ray`` made to fail everything but ``--engine ray`` works (that one says how to
install it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import flowlens
from flowlens.io.store import open_store
from flowlens.pipeline.engines import run_job
from flowlens.pipeline.job import BatchJob

pytestmark = pytest.mark.slow
ROOT = str(Path(flowlens.__file__).resolve().parent.parent)


def flowlens_process(args: list[str], prelude: str = "") -> subprocess.Popen:
    """``flowlens <args>`` in a fresh Python (this checkout's flowlens), ``prelude`` run first."""
    code = prelude + "\nimport sys\nfrom flowlens.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_concurrent_processes_on_one_store(tabletop_episodes, tmp_path, assert_same_store):
    store = tmp_path / "store"
    first, second = tabletop_episodes[:3], tabletop_episodes[1:]  # ep1 and ep2 in both runs
    runs = [
        flowlens_process(["batch", "--episodes", *eps, "--frame-step", "10", "--store", str(store),
                          "--output-dir", str(tmp_path / name), "--no-progress"])
        for name, eps in (("a", first), ("b", second))
    ]
    for p in runs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    # Nothing lost: every frame of both runs is in the store, listed once, and every entry reads back.
    entries = json.loads((store / "index.json").read_text(encoding="utf-8"))["entries"]
    keys = [e["key"] for e in entries]
    assert len(keys) == len(set(keys)) == 16
    shared = open_store(store, mode="r")
    assert shared.problems == [] and shared.verify() == []
    # Nothing corrupt: the store equals one written by a single process, array for array.
    alone = BatchJob(episodes=tabletop_episodes, store=str(tmp_path / "alone"), out_dir=str(tmp_path / "t"), every=10)
    reference = run_job(alone, progress=False).table
    assert_same_store(open_store(alone.store, mode="r"), shared)
    a = pd.read_parquet(tmp_path / "a" / "results.parquet")
    b = pd.read_parquet(tmp_path / "b" / "results.parquet")
    both = pd.concat([a, b[b["episode"] == "ep3"]], ignore_index=True)
    pd.testing.assert_frame_equal(both, reference)
    assert list(pd.read_parquet(tmp_path / "b" / "episodes.parquet")["episode"]) == ["ep1", "ep2", "ep3"]


BLOCK_RAY = textwrap.dedent(
    """
    import sys
    class NoRay:
        def find_spec(self, name, path=None, target=None):
            if name == "ray" or name.startswith("ray."):
                raise ModuleNotFoundError("No module named 'ray'", name="ray")
            return None
    sys.meta_path.insert(0, NoRay())
    """
)


def test_without_ray_local_runs_and_ray_says_how_to_install(tabletop_episodes, tmp_path):
    common = ["batch", "--episodes", tabletop_episodes[0], "--frames", "0", "--store", str(tmp_path / "store"),
              "--no-progress"]
    ray_run = flowlens_process([*common, "--output-dir", str(tmp_path / "ray"), "--engine", "ray"], BLOCK_RAY)
    out, err = ray_run.communicate(timeout=600)
    assert ray_run.returncode == 2
    assert "pip install 'flowlens[ray]'" in err and "--engine local" in err and "Traceback" not in err
    assert not (tmp_path / "ray").exists() and not (tmp_path / "store").exists()  # failed before any work
    local = flowlens_process([*common, "--output-dir", str(tmp_path / "local")],
                             BLOCK_RAY + "\nimport flowlens.pipeline, flowlens.io\n")
    out, err = local.communicate(timeout=600)
    assert local.returncode == 0, err
    assert "1 episodes committed" in err + out
    summary = pd.read_parquet(tmp_path / "local" / "episodes.parquet")
    assert list(summary["episode"]) == ["ep0"] and list(summary["frames"]) == [1]
    assert open_store(tmp_path / "store", mode="r").keys() == ["ep0__f000000"]
