"""The Ray engine against the local one on the embedded model: a local Ray cluster (2 CPUs, one
per module), the same job on both engines gives the same store, array for array, and the same
tables; killing an actor mid-run still commits every episode exactly once."""

from __future__ import annotations

import json

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from flowlens.io.store import open_store  # noqa: E402
from flowlens.pipeline.engines import RayEngine, run_job  # noqa: E402
from flowlens.pipeline.job import BatchJob  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def job_in(folder, episodes) -> BatchJob:
    return BatchJob(episodes=episodes, store=str(folder / "store"), out_dir=str(folder / "tables"), every=10)


@pytest.fixture(scope="module")
def local_run(tabletop_episodes, tmp_path_factory):
    job = job_in(tmp_path_factory.mktemp("local"), tabletop_episodes)
    return job, run_job(job, progress=False)


def index_keys(store_dir) -> list[str]:
    with open(f"{store_dir}/index.json", encoding="utf-8") as f:
        return [e["key"] for e in json.load(f)["entries"]]


def test_ray_gives_the_local_store_and_tables(cluster, local_run, tabletop_episodes, tmp_path, assert_same_store):
    local_job, local = local_run
    job = job_in(tmp_path, tabletop_episodes)
    result = run_job(job, engine=RayEngine(actors=2), progress=False)
    assert result.committed == 4 and result.skipped == 0 and result.replaced == 0
    assert_same_store(open_store(local_job.store, mode="r"), open_store(job.store, mode="r"))
    assert len(open_store(job.store, mode="r").keys()) == 16  # every 10th frame of 4 episodes
    pd.testing.assert_frame_equal(result.table, local.table)
    summary = pd.read_parquet(f"{job.out_dir}/episodes.parquet")
    assert list(summary["episode"]) == ["ep0", "ep1", "ep2", "ep3"]
    assert list(summary["status"]) == ["committed"] * 4 and set(summary["engine"]) == {"ray"}
    assert list(summary["frames"]) == list(summary["computed"]) == [4, 4, 3, 5]  # episode lengths differ
    assert list(summary["reused"]) == [0, 0, 0, 0]
    assert summary["worker"].nunique() == 2  # both actors took episodes


def test_a_killed_actor_still_commits_every_episode_once(
    cluster, local_run, tabletop_episodes, tmp_path, assert_same_store
):
    local_job, local = local_run
    job = job_in(tmp_path, tabletop_episodes)
    engine = RayEngine(actors=2)
    commits, killed = [], []

    def kill_the_busy_actor(outcome):
        commits.append(outcome.episode)
        for ref, (i, task) in list(engine.in_flight.items()):
            if not killed and not ray.wait([ref], timeout=0)[0]:  # mid-episode: its result is not there yet
                killed.append((engine.workers[i], task[0].episode))
                ray.kill(engine.handles[i], no_restart=True)

    result = run_job(job, engine=engine, progress=False, on_commit=kill_the_busy_actor)
    assert killed and result.replaced == 1
    assert sorted(commits) == ["ep0", "ep1", "ep2", "ep3"]  # each committed exactly once
    keys = index_keys(job.store)
    assert len(keys) == len(set(keys)) == 16
    assert_same_store(open_store(local_job.store, mode="r"), open_store(job.store, mode="r"))
    pd.testing.assert_frame_equal(result.table, local.table)
    summary = pd.read_parquet(f"{job.out_dir}/episodes.parquet")
    assert sorted(summary["episode"]) == ["ep0", "ep1", "ep2", "ep3"] and set(summary["status"]) == {"committed"}
    worker, episode = killed[0]
    # The episode the kill interrupted was redone by another worker (the killed actor may have committed
    # an earlier episode before it was killed, so it can still appear in the summary).
    assert summary.set_index("episode").loc[episode, "worker"] not in ("", worker)
    # A re-run resumes: nothing left to commit, the same table.
    again = run_job(job, engine=RayEngine(actors=2), progress=False)
    assert again.committed == 0 and again.skipped == 4
    pd.testing.assert_frame_equal(again.table, local.table)
