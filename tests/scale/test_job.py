"""BatchJob and the engines' plumbing: validation messages, grouping by episode, the summary table."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from flowlens.errors import FlowlensError
from flowlens.io.batch import FrameSpec
from flowlens.pipeline.engines import RayEngine, episode_summary, make_engine, run_job
from flowlens.pipeline.job import BatchJob, EpisodeOutcome, episode_tasks


def test_job_checks_its_arguments(tmp_path):
    with pytest.raises(FlowlensError, match="episodes must name at least one episode"):
        BatchJob(episodes=(), store="s", out_dir="o")
    with pytest.raises(FlowlensError, match="policy"):
        BatchJob(episodes=("a",), store="s", out_dir="o", policy="everything")
    with pytest.raises(FlowlensError, match="every must be >= 1"):
        BatchJob(episodes=("a",), store="s", out_dir="o", every=0)
    with pytest.raises(FlowlensError, match="engine"):
        make_engine("spark")
    with pytest.raises(FlowlensError, match="actors must be >= 1"):
        RayEngine(actors=0)
    job = BatchJob(episodes=(tmp_path / "x",), store=tmp_path / "s", out_dir=tmp_path / "o", frames=[3, 1])
    assert job.episodes == (str(tmp_path / "x"),) and job.frames == (3, 1) and job.store == str(tmp_path / "s")


def test_a_job_over_a_missing_episode_names_it(tmp_path):
    job = BatchJob(episodes=(str(tmp_path / "nowhere"),), store=str(tmp_path / "s"), out_dir=str(tmp_path / "o"))
    with pytest.raises(FlowlensError, match="nowhere"):
        run_job(job, progress=False)


def test_episode_tasks_group_by_episode_in_plan_order():
    specs = [FrameSpec("b", 0), FrameSpec("a", 0), FrameSpec("b", 5), FrameSpec("a", 2)]
    assert episode_tasks(specs) == [(specs[0], specs[2]), (specs[1], specs[3])]
    assert episode_tasks([]) == []


def test_episode_summary_marks_resumed_episodes():
    specs = [FrameSpec("a", 0), FrameSpec("a", 1), FrameSpec("b", 0)]
    outcome = EpisodeOutcome("b", ([{"layer": 0}],), computed=0, reused=1, seconds=0.5, worker="h:1")
    table = episode_summary(specs, {"b": outcome}, engine="ray")
    assert list(table["episode"]) == ["a", "b"] and list(table["frames"]) == [2, 1]
    assert list(table["status"]) == ["resumed", "committed"]
    assert list(table["reused"]) == [0, 1] and list(table["worker"]) == ["", "h:1"]
    assert math.isnan(table["seconds"][0]) and table["seconds"][1] == 0.5
    assert set(table["engine"]) == {"ray"}


def test_batch_command_over_an_episode_folder_resumes(tabletop_episodes, tmp_path, capsys):
    import pandas as pd

    from flowlens.cli.main import main

    folder = str(Path(tabletop_episodes[0]).parent)
    argv = ["batch", "--episodes-dir", folder, "--frames", "0", "--store", str(tmp_path / "s"),
            "--output-dir", str(tmp_path / "t"), "--no-progress"]
    assert main(argv) == 0
    assert "4 episodes committed in" in capsys.readouterr().out
    assert main(argv) == 0
    assert "0 episodes committed (4 done by an earlier run)" in capsys.readouterr().out
    summary = pd.read_parquet(tmp_path / "t" / "episodes.parquet")
    assert list(summary["episode"]) == ["ep0", "ep1", "ep2", "ep3"] and set(summary["status"]) == {"resumed"}
    assert len(pd.read_parquet(tmp_path / "t" / "results.parquet")) == 4 * 18  # 4 frames × 18 layers
    assert main(["batch", "--store", "s", "--output-dir", "t"]) == 2
    assert "either --episodes PATH... or --episodes-dir DIR" in capsys.readouterr().err
