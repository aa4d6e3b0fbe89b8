"""A batch job: which episodes and frames, which model and analysis, which capture store — and the
worker that does one episode of it.

A ``BatchJob`` is a small frozen, picklable description; the same job runs on any engine
(``flowlens.pipeline.engines``: in this process, or one Ray actor per device)::

    job = BatchJob(episodes=("eps/ep0", "eps/ep1"), store="captures", out_dir="tables",
                   checkpoint="builtin:tabletop", every=8)

The unit of work is one *episode* (every planned frame of it, in frame order), done by an
``EpisodeWorker``: it holds the model (loaded once per worker: per GPU actor on a cluster) and the
opened capture store. For each frame it takes the capture from the store when one from the same
model and seed is there (a retried or resumed episode reuses what was already written), else
runs the model and puts the capture into the store (atomic per entry, under the store's lock:
many workers on one shared store never lose each other's index lines). It returns the frame's
analysis rows — one per figure layer: the share of the query's score on each token group — which
the driver commits to the batch tables (``flowlens.io.batch.BatchRun``, one writer).

Output: ``<store>`` holds one capture per planned frame (key ``frame_key(episode, frame)``);
``<out_dir>`` holds the batch tables (``results.parquet``: one row per frame and layer) and
``episodes.parquet`` (one row per episode, written by the engine at the end).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Sequence

import numpy as np

from flowlens.errors import FlowlensError
from flowlens.io.batch import FrameSpec, plan_frames
from flowlens.io.store import POLICIES
from flowlens.pipeline.spec import AnalysisSpec


@dataclasses.dataclass(frozen=True)
class BatchJob:
    """What a batch run computes; the same on every engine.

    Attributes:
      episodes: ``open_episode`` paths / specs, in output order (names must be distinct).
      store: the capture store folder (must be shared by every worker of a cluster run).
      out_dir: the folder of the batch tables.
      checkpoint: the ``load_backend`` name ("builtin:tabletop", "synthetic", a checkpoint dir).
      spec: the analysis of every frame.
      every: visit every ``every``-th frame (ignored when ``frames`` is given).
      frames: explicit frame indices (clipped to each episode's length), or None.
      policy, precision: the store's storage policy and precision (new stores; an existing store
        must match).
      seed: noise seed of the sampler.
    """

    episodes: tuple[str, ...]
    store: str
    out_dir: str
    checkpoint: str = "builtin:tabletop"
    spec: AnalysisSpec = AnalysisSpec()
    every: int = 10
    frames: tuple[int, ...] | None = None
    policy: str = "rows_for_rollout"
    precision: str = "float16"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "episodes", tuple(os.fspath(e) for e in self.episodes))
        object.__setattr__(self, "store", os.fspath(self.store))
        object.__setattr__(self, "out_dir", os.fspath(self.out_dir))
        if not self.episodes:
            raise FlowlensError("episodes must name at least one episode (open_episode paths); got none.")
        if self.policy not in POLICIES:
            from flowlens.errors import unknown_name_error

            raise unknown_name_error("policy", self.policy, POLICIES)
        if self.every < 1:
            raise FlowlensError(f"every must be >= 1 (visit every n-th frame), got {self.every}.")
        if self.frames is not None:
            object.__setattr__(self, "frames", tuple(int(f) for f in self.frames))

    def plan(self) -> list[FrameSpec]:
        """One FrameSpec per visited frame, episode then frame order (opens each episode once)."""
        return plan_frames(self.episodes, every=self.every, frames=self.frames)

    @property
    def fn_name(self) -> str:
        """What the batch folder records as its per-frame function: the model, analysis and seed
        (resuming a folder with another of these is refused)."""
        return f"flowlens.pipeline.job:{self.checkpoint}:{sorted(self.spec.to_dict().items())}:seed={self.seed}"


def episode_tasks(specs: Sequence[FrameSpec]) -> list[tuple[FrameSpec, ...]]:
    """The pending frames grouped by episode (first-appearance order), each group in plan order."""
    groups: dict[str, list[FrameSpec]] = {}
    for s in specs:
        groups.setdefault(s.episode, []).append(s)
    return [tuple(g) for g in groups.values()]


@dataclasses.dataclass(frozen=True)
class EpisodeOutcome:
    """What a worker returns for one episode.

    Attributes:
      episode: its name.
      rows: per frame (in the order given), that frame's analysis rows (list of dicts).
      computed: frames whose capture the model computed; reused: taken from the store.
      seconds: wall time of the episode on the worker.
      worker: "<host>:<pid>" of the worker.
    """

    episode: str
    rows: tuple[list[dict], ...]
    computed: int
    reused: int
    seconds: float
    worker: str


def group_share_rows(result) -> list[dict]:
    """One row per figure layer of a ``FrameResult``: ``layer`` and ``share_<group>``, the share of
    the query's (NaN-free) score mass on each token group of ``layout.groups()``."""
    groups = result.layout.groups()
    rows = []
    for layer in result.figure_layers:
        scores = np.nan_to_num(result.scores_at(layer))
        total = float(scores.sum())
        row: dict = {"layer": int(layer)}
        for name, idx in groups.items():
            row[f"share_{name}"] = float(scores[idx].sum() / total) if total > 0 else float("nan")
        rows.append(row)
    return rows


class EpisodeWorker:
    """Holds one model and the opened store; ``run(specs)`` does one episode (see module docstring).

    Made once per process (the local engine) or per actor (Ray: one per device)."""

    def __init__(self, job: BatchJob):
        from flowlens.io.store import open_store
        from flowlens.pipeline.backends import load_backend

        self.job = job
        self.backend = load_backend(job.checkpoint)
        job.spec.check_model(
            num_layers=self.backend.num_layers, num_heads=self.backend.num_heads, num_steps=self.backend.num_steps
        )
        self.store = open_store(job.store, policy=job.policy, precision=job.precision)

    def ping(self) -> str:
        """``"<host>:<pid>"`` of this worker (an engine waits on it to know the model is loaded)."""
        return f"{socket.gethostname()}:{os.getpid()}"

    def run(self, specs: Sequence[FrameSpec]) -> EpisodeOutcome:
        """Capture (or reuse) and analyse every frame of ``specs`` (one episode, frame order)."""
        from flowlens.pipeline.analyze import compute_scores
        from flowlens.pipeline.frames import capture_frame, capture_needs

        start = time.perf_counter()
        names = {s.episode for s in specs}
        if len(names) != 1:
            raise FlowlensError(f"a worker task is one episode; got frames of {sorted(names)}.")
        needs = capture_needs(self.job.spec, (), self.backend.num_steps)
        counts: dict = {}
        rows = []
        for s in specs:
            frame = s.load_frame()
            before = counts.get("computed", 0)
            capture = capture_frame(
                self.backend, frame, needs, seed=self.job.seed, store=self.store, key=s.key, counts=counts
            )
            if counts.get("computed", 0) > before:  # analyse the stored (reduced) copy, as a resumed run does
                capture = self.store.get(s.key)
            result = compute_scores(capture, self.job.spec, images=frame.images, frame_index=frame.index,
                                    prompt=frame.prompt)
            rows.append(group_share_rows(result))
        return EpisodeOutcome(
            episode=specs[0].episode,
            rows=tuple(rows),
            computed=int(counts.get("computed", 0)),
            reused=int(counts.get("reused", 0)),
            seconds=time.perf_counter() - start,
            worker=self.ping(),
        )
