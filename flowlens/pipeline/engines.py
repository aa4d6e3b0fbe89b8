"""Engines: where the episodes of a ``BatchJob`` run — in this process (default) or on Ray actors.

    result = run_job(job)                                   # local: one worker, this process
    result = run_job(job, engine=RayEngine(actors=4, gpus_per_actor=1, address="auto"))

The driver is the same for both (``run_job``): it plans the frames, opens the batch folder
(``flowlens.io.batch.BatchRun``: resumable, one driver per folder), hands the pending episodes to
the engine and commits each finished episode's rows (atomic per frame; an episode is done once
all its frames are) — one tqdm bar over episodes — then writes ``results.parquet`` and the
per-episode summary ``episodes.parquet`` (pandas). Captures go straight from the workers into the
shared capture store (``flowlens.io.store``: atomic entries, index updates under the store's lock).

``RayEngine``: one actor per device (``num_gpus=gpus_per_actor``), each holding the model
(``EpisodeWorker``), one episode in flight per actor. When an actor dies (killed, node lost) its
episode goes back to the queue and a fresh actor takes its place (up to ``max_replacements``);
the retried episode reuses the captures its dead worker already put into the store, and the
driver commits every episode exactly once. A re-run of the job resumes either way. Ray is an
optional extra (``pip install 'flowlens[ray]'``); without it only ``RayEngine`` fails, saying so.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from flowlens.errors import FlowlensError, unknown_name_error
from flowlens.pipeline.job import BatchJob, EpisodeOutcome, EpisodeWorker, episode_tasks

ENGINES = ("local", "ray")
SUMMARY_FILE = "episodes.parquet"
RAY_INSTALL = (
    "the Ray engine needs Ray, an optional extra (~600 MB): pip install 'flowlens[ray]' "
    "(or pip install 'ray>=2.9'); or run with --engine local (the default)."
)

Commit = Callable[[tuple, EpisodeOutcome], None]


class LocalEngine:
    """Every episode in this process, one after the other, with one model."""

    name = "local"

    def map(self, job: BatchJob, tasks: Sequence[tuple], commit: Commit) -> dict:
        """Run ``tasks`` (episodes' frame specs) and ``commit`` each outcome; returns run facts."""
        if not tasks:
            return {"workers": 0, "replaced": 0, "ready_seconds": 0.0}
        ready = time.perf_counter()
        worker = EpisodeWorker(job)
        ready = time.perf_counter() - ready
        for task in tasks:
            commit(task, worker.run(task))
        return {"workers": 1, "replaced": 0, "ready_seconds": ready}


def import_ray():
    """The ``ray`` module, or a FlowlensError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise FlowlensError(RAY_INSTALL) from None
    return ray


@dataclasses.dataclass
class RayEngine:
    """One Ray actor per device, each holding the model; see the module docstring.

    Attributes:
      actors: number of actors (one per GPU on a cluster).
      address: the cluster to join (``"auto"``, ``"ray://host:10001"``); None starts a local one
        unless Ray is initialised already (then that one is used and left running).
      gpus_per_actor, cpus_per_actor: Ray resources of each actor.
      max_replacements: actors that may die before the run gives up.

    While ``map`` runs, ``handles`` are the live actors, ``workers`` their ``"<host>:<pid>"``
    ("" for a replacement not asked yet) and ``in_flight`` maps each pending result (a Ray object
    ref) to (actor index, episode task).
    """

    actors: int = 2
    address: str | None = None
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    max_replacements: int = 8
    name: str = dataclasses.field(default="ray", init=False)
    handles: list = dataclasses.field(default_factory=list, init=False, repr=False)
    workers: list = dataclasses.field(default_factory=list, init=False, repr=False)
    in_flight: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise FlowlensError(f"actors must be >= 1 (one per device), got {self.actors}.")

    def map(self, job: BatchJob, tasks: Sequence[tuple], commit: Commit) -> dict:
        """Shard ``tasks`` over the actors; ``commit`` each outcome on the driver; returns run facts."""
        ray = import_ray()
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        remote = ray.remote(num_cpus=self.cpus_per_actor, num_gpus=self.gpus_per_actor)(EpisodeWorker)
        replaced, ready = 0, 0.0
        try:
            self.handles = [remote.remote(job) for _ in range(min(self.actors, len(tasks)))]
            ready = time.perf_counter()
            self.workers = ray.get([h.ping.remote() for h in self.handles])  # every model loaded
            ready = time.perf_counter() - ready
            queue = collections.deque(tasks)
            running = self.in_flight = {}  # object ref -> (actor index, task)

            def submit(i: int) -> None:
                if queue:
                    task = queue.popleft()
                    running[self.handles[i].run.remote(task)] = (i, task)

            for i in range(len(self.handles)):
                submit(i)
            while running:
                done, _ = ray.wait(list(running), num_returns=1)
                i, task = running.pop(done[0])
                try:
                    outcome = ray.get(done[0])
                except ray.exceptions.RayActorError as e:
                    replaced += 1
                    if replaced > self.max_replacements:
                        raise FlowlensError(
                            f"{replaced} Ray actors died (the last on episode {task[0].episode!r}: {e}); "
                            "giving up. Re-run the job to resume; check the workers' memory and devices."
                        ) from None
                    queue.appendleft(task)
                    self.handles[i] = remote.remote(job)
                    self.workers[i] = ""
                    submit(i)
                    continue
                except ray.exceptions.RayTaskError as e:
                    cause = e.as_instanceof_cause()
                    raise FlowlensError(f"episode {task[0].episode!r} failed on a Ray worker: {cause}") from None
                commit(task, outcome)
                submit(i)
        finally:
            for h in self.handles:
                ray.kill(h)
            self.handles, self.in_flight = [], {}
            if started:
                ray.shutdown()
        return {"workers": min(self.actors, len(tasks)), "replaced": replaced, "ready_seconds": ready}


def make_engine(engine: str | LocalEngine | RayEngine, **ray_options):
    """An engine from its name ("local", "ray" with ``RayEngine`` options) or as given."""
    if not isinstance(engine, str):
        return engine
    if engine not in ENGINES:
        raise unknown_name_error("engine", engine, ENGINES)
    if engine == "ray":
        import_ray()  # fail before any work when Ray is missing
        return RayEngine(**ray_options)
    return LocalEngine()


@dataclasses.dataclass
class JobResult:
    """Outcome of ``run_job``.

    Attributes:
      table: all analysis rows (pandas DataFrame: episode, frame, layer, share_<group>...), plan order.
      episodes: the per-episode summary (pandas DataFrame), also in ``<out_dir>/episodes.parquet``.
      committed: episodes committed by this call; skipped: done before it.
      replaced: Ray actors that died and were replaced.
      seconds: wall time of the engine (model loading included).
      ready_seconds: of which starting the workers and loading their models (Ray: actors' start).
    """

    table: object
    episodes: object
    committed: int
    skipped: int
    replaced: int
    seconds: float
    ready_seconds: float = 0.0


def run_job(
    job: BatchJob,
    *,
    engine: str | LocalEngine | RayEngine = "local",
    progress: bool = True,
    chunk_size: int = 32,
    on_commit: Callable[[EpisodeOutcome], None] | None = None,
    **ray_options,
) -> JobResult:
    """Run every pending episode of ``job`` on ``engine`` and write the tables (module docstring).

    Args:
      job: the job.
      engine: "local" (default), "ray" (``ray_options``: ``RayEngine`` fields) or an engine.
      progress: one tqdm bar over episodes (stderr).
      chunk_size: frames per chunk file of the batch folder.
      on_commit: called on the driver after each episode is committed, with its outcome.
    """
    from tqdm.auto import tqdm

    from flowlens.io.batch import BatchRun

    runner = make_engine(engine, **ray_options)
    specs = job.plan()
    with BatchRun(job.out_dir, specs, chunk_size=chunk_size, fn_name=job.fn_name) as run:
        tasks = episode_tasks(run.pending())
        total = len(episode_tasks(specs))
        outcomes: dict[str, EpisodeOutcome] = {}
        bar = tqdm(total=total, initial=total - len(tasks), desc=f"episodes ({runner.name})", unit="episode",
                   disable=not progress, file=sys.stderr, dynamic_ncols=True)

        def commit(task: tuple, outcome: EpisodeOutcome) -> None:
            if outcome.episode in outcomes:  # never twice, whatever an engine retried
                return
            for spec, rows in zip(task, outcome.rows, strict=True):
                run.record(spec, rows)
            outcomes[outcome.episode] = outcome
            bar.update(1)
            if on_commit is not None:
                on_commit(outcome)

        start = time.perf_counter()
        try:
            facts = runner.map(job, tasks, commit)
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        table = run.finish()
    summary = episode_summary(specs, outcomes, engine=runner.name)
    from flowlens.io.files import atomic_write

    with atomic_write(Path(job.out_dir) / SUMMARY_FILE) as f:
        summary.to_parquet(f, index=False)
    return JobResult(table, summary, len(outcomes), total - len(tasks), facts["replaced"], seconds,
                     facts["ready_seconds"])


def episode_summary(specs, outcomes: dict[str, EpisodeOutcome], *, engine: str):
    """One row per planned episode: frames, captures computed / reused, seconds and worker of this
    run (NaN / "" for an episode done by an earlier run: ``status`` "resumed")."""
    import pandas as pd

    frames = collections.Counter(s.episode for s in specs)
    rows = []
    for name, n in frames.items():
        o = outcomes.get(name)
        rows.append({
            "episode": name,
            "frames": n,
            "status": "committed" if o else "resumed",
            "computed": o.computed if o else 0,
            "reused": o.reused if o else 0,
            "seconds": o.seconds if o else math.nan,
            "worker": o.worker if o else "",
            "engine": engine,
        })
    return pd.DataFrame(rows)
