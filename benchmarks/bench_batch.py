"""Batch runs on this machine: the local engine vs Ray (2 actors) on the embedded tabletop task.

    python benchmarks/bench_batch.py                  # 20 episodes, every 8th frame
    python benchmarks/bench_batch.py --episodes 4     # quick look

The same ``BatchJob`` (builtin:tabletop model, rollout of the first action token, float16
``rows_for_rollout`` store) runs once locally (one process, one model) and once on a local Ray
cluster (``ray.init(num_cpus=2)``, ``RayEngine(actors=2)``), each into a fresh store. Reported,
one JSON line each:

- ``local`` / ``ray``: wall seconds, of which worker start + model load (``ready_seconds``),
  episodes and frames per second, end to end; for Ray also ``ray.init`` and ``ray.shutdown``.
- ``compare``: throughput ratio Ray / local (end to end, and on the steady part after the workers
  are ready) and Ray's fixed overhead: init + shutdown + (actor start and model load − the local
  model load).
- ``load``: the load average before and after (the machine may be shared: numbers are noisy).

Episodes are generated once into ``--workdir`` (kept between runs: ≈ 3.5 s each).
"""

# %%
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from flowlens.pipeline.engines import RayEngine, run_job
from flowlens.pipeline.job import BatchJob


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def make_episodes(folder: Path, n: int) -> tuple[str, ...]:
    """``n`` tabletop episode folders (scenes 0..n-1), generated once."""
    from flowlens.tasks.tabletop import run_expert, sample_scene, write_episode_dir

    paths = []
    for i in range(n):
        path = folder / f"ep{i:03d}"
        if not (path / "episode.json").is_file():
            write_episode_dir(run_expert(sample_scene(i)), path, overwrite=True)
        paths.append(str(path))
    return tuple(paths)


def run(job: BatchJob, engine) -> dict:
    start = time.perf_counter()
    result = run_job(job, engine=engine, progress=False)
    seconds = time.perf_counter() - start
    frames = int(result.episodes["frames"].sum())
    return {
        "seconds": round(seconds, 2),
        "ready_seconds": round(result.ready_seconds, 2),
        "episodes": result.committed,
        "frames": frames,
        "episodes_per_s": round(result.committed / seconds, 3),
        "frames_per_s": round(frames / seconds, 2),
        "steady_frames_per_s": round(frames / (seconds - result.ready_seconds), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--every", type=int, default=8, help="every n-th frame of each episode (default 8)")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/flowlens_bench_batch")
    args = parser.parse_args()
    work = Path(args.workdir)
    emit(phase="load", when="start", loadavg=os.getloadavg(), cpus=os.cpu_count())
    t = time.perf_counter()
    episodes = make_episodes(work / "episodes", args.episodes)
    emit(phase="episodes", n=len(episodes), seconds=round(time.perf_counter() - t, 1))
    for name in ("local", "ray"):
        shutil.rmtree(work / name, ignore_errors=True)

    def job(name: str) -> BatchJob:
        return BatchJob(episodes=episodes, store=str(work / name / "store"), out_dir=str(work / name / "tables"),
                        checkpoint="builtin:tabletop", every=args.every)

    local = run(job("local"), "local")
    emit(phase="local", **local)

    import ray

    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    init = time.perf_counter() - t
    ray_run = run(job("ray"), RayEngine(actors=args.actors))
    t = time.perf_counter()
    ray.shutdown()
    shutdown = time.perf_counter() - t
    emit(phase="ray", actors=args.actors, init_seconds=round(init, 2), shutdown_seconds=round(shutdown, 2), **ray_run)
    total_ray = ray_run["seconds"] + init + shutdown
    emit(
        phase="compare",
        throughput_ratio_end_to_end=round(local["seconds"] / total_ray, 3),
        throughput_ratio_steady=round(ray_run["steady_frames_per_s"] / local["steady_frames_per_s"], 3),
        ray_fixed_overhead_seconds=round(init + shutdown + ray_run["ready_seconds"] - local["ready_seconds"], 2),
    )
    emit(phase="load", when="end", loadavg=os.getloadavg())


if __name__ == "__main__":
    main()
