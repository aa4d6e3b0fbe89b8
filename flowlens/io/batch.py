"""Batch runs: one pure per-frame function over many episodes and frames, into tidy tables.

The unit of work is a ``FrameSpec`` — (episode name, frame index, episode source spec, options):
small, picklable and JSON-able. The work is a pure function ``fn(spec) -> rows`` (a list of dicts
or a pandas DataFrame, one row per (step, layer, group, ...) — whatever the analysis reports);
``run_batch`` adds ``episode`` and ``frame`` columns and writes::

    <out>/batch.json                the plan's fingerprint (refuses to mix two plans in one folder)
    <out>/parts/<key>.parquet       rows of one finished frame (atomic; the resume unit)
    <out>/chunks/chunk-00000.parquet rows of ``chunk_size`` consecutive frames once all are done
                                    (atomic; its parts are then removed)
    <out>/errors.jsonl              frames that raised, with ``on_error="skip"``
    <out>/results.parquet, results.csv   all rows, in plan order (written at the end, atomically)

Resumable: re-running the same plan into the same folder skips every frame whose part or chunk
exists, so a crash (even SIGKILL) loses at most the frames in flight. A frame counts as done only
once its rows are in a part or chunk file (written atomically and fsync'ed); a chunk is written
only from every one of its parts. Resuming with another per-frame function (compared by its
qualified name, recorded in ``batch.json``) is refused. Deterministic: rows come out in plan order
(frame order, then the order ``fn`` returned them), whatever the number of workers or interruptions.

One run per folder: a ``BatchRun`` holds ``<out>/.flowlens.lock`` (``flowlens.io._lock``) from
its creation until ``close()`` (``run_batch`` and ``with BatchRun(...)`` close it; so does the
process ending, even by SIGKILL). A second run on the same folder fails at once with a
``FlowlensError`` naming the folder and the holding process; it does not wait.

Distributed engines: because ``fn`` is pure and specs are picklable, the driver side stays
``BatchRun`` and only the loop changes. With Ray::

    with BatchRun(out_dir, specs) as run:
        todo = run.pending()
        remote = ray.remote(fn)
        for spec, rows in zip(todo, ray.get([remote.remote(s) for s in todo])):
            run.record(spec, rows)
        run.finish()

Beam / Dask / multiprocessing map ``fn`` over ``run.pending()`` the same way; only the driver
calls ``record`` (one writer). ``workers=N`` does this with ``N`` spawned processes, BLAS capped to
``blas_threads`` threads each (threadpoolctl when installed, else the OMP/OpenBLAS/MKL env vars).

A per-frame function that also keeps its captures writes them to a ``CaptureStore`` under
``spec.key`` and skips the model when ``spec.key in store`` — with ``workers=0`` (stores have one
writer), or one store per worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pickle
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from flowlens.errors import FlowlensError, unknown_name_error
from flowlens.io.files import TMP_MARK, atomic_write, read_json, remove_stale_temps, write_json_atomic
from flowlens.io._lock import LOCK_NAME, FolderLock
from flowlens.io.store import frame_key

BATCH_MAGIC = "flowlens-batch"
BATCH_VERSION = 1
_BLAS_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


@dataclasses.dataclass(frozen=True)
class FrameSpec:
    """One frame to process.

    Attributes:
      episode: episode name, unique within a run.
      frame: frame index in the episode.
      source: how to open the episode (an ``open_episode`` path/spec), or None for synthetic work.
      options: extra keyword options as sorted (name, value) pairs (JSON values), e.g. the prompt.
    """

    episode: str
    frame: int
    source: str | None = None
    options: tuple[tuple[str, object], ...] = ()

    @property
    def key(self) -> str:
        return frame_key(self.episode, self.frame)

    def option(self, name: str, default=None):
        return dict(self.options).get(name, default)

    def to_dict(self) -> dict:
        return {
            "episode": self.episode,
            "frame": self.frame,
            "source": self.source,
            "options": [list(kv) for kv in self.options],
        }

    def open_episode(self):
        """The episode source (``open_episode(source, **options)``), cached per process: the last
        ``_OPEN_CACHE_SIZE`` episodes stay open, so consecutive frames of one episode don't re-read
        its files. Shared — don't close it."""
        if self.source is None:
            raise FlowlensError(
                f"frame {self.key} has no source; build specs with plan_frames(...) or pass "
                "FrameSpec(episode, frame, source='<path>')."
            )
        cache_key = (self.source, json.dumps(self.options, sort_keys=True, default=repr))  # dict options
        src = _OPEN_CACHE.pop(cache_key, None)
        if src is None:
            from flowlens.io.sources import open_episode

            src = open_episode(self.source, **dict(self.options))
        _OPEN_CACHE[cache_key] = src
        while len(_OPEN_CACHE) > _OPEN_CACHE_SIZE:
            _OPEN_CACHE.pop(next(iter(_OPEN_CACHE))).close()
        return src

    def load_frame(self):
        """The ``Frame`` this spec names (images, prompt, state, transforms)."""
        return self.open_episode().frame(self.frame)


_OPEN_CACHE: dict = {}
_OPEN_CACHE_SIZE = 2


def plan_frames(
    episodes: Iterable[str | os.PathLike],
    *,
    every: int = 1,
    frames: Sequence[int] | None = None,
    **open_kwargs,
) -> list[FrameSpec]:
    """One FrameSpec per selected frame of each episode, in episode then frame order.

    Args:
      episodes: ``open_episode`` paths/specs (``list_episodes(folder)`` gives them all).
      every: keep every ``every``-th frame (openpi replans every 5 steps: ``every=5``).
      frames: explicit frame indices instead (clipped to each episode's length).
      open_kwargs: options stored in every spec and passed back to ``open_episode`` (e.g. prompt).
    """
    from flowlens.io.sources import open_episode

    if every < 1:
        raise FlowlensError(f"every must be >= 1, got {every}.")
    specs, seen = [], {}
    options = tuple(sorted(open_kwargs.items()))
    for ep in episodes:
        with open_episode(ep, **open_kwargs) as src:
            n, name = len(src), src.name
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}_{seen[name]}"
        idx = range(0, n, every) if frames is None else [f for f in frames if 0 <= f < n]
        specs += [FrameSpec(name, int(i), os.fspath(ep), options) for i in idx]
    return specs


# ---- the run -------------------------------------------------------------------------------
def _plan_hash(specs: Sequence[FrameSpec]) -> str:
    blob = json.dumps([s.to_dict() for s in specs], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _as_table(spec: FrameSpec, rows):
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        df = rows.reset_index(drop=True)
    else:
        if rows is None:
            rows = []
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise FlowlensError(
                f"the per-frame function must return a list of dicts or a DataFrame; for frame "
                f"{spec.key} it returned {type(rows).__name__}."
            )
        df = pd.DataFrame(rows)
    for col, value in (("episode", spec.episode), ("frame", spec.frame)):
        if col in df.columns:
            if not (df[col] == value).all():
                raise FlowlensError(
                    f"frame {spec.key}: the per-frame function returned a {col!r} column that "
                    f"disagrees with the spec ({value!r}); drop it, run_batch adds it."
                )
            df = df.drop(columns=col)
    df.insert(0, "frame", np.full(len(df), spec.frame, dtype=np.int64))
    df.insert(0, "episode", np.array([spec.episode] * len(df), dtype=object))
    return df


def _write_parquet(df, path: Path) -> None:
    with atomic_write(path) as f:
        df.to_parquet(f, index=False)


class BatchRun:
    """The driver side of a batch: which frames are pending, recording results, assembling tables.

    Args:
      out_dir: results folder (created; must hold no other plan's results).
      specs: the plan, in output order; keys (episode, frame) must be unique.
      chunk_size: frames per chunk file.
      fn_name: the per-frame function's qualified name; resuming a folder whose ``batch.json``
        names another function is refused ("" when unknown: not compared) unless
        ``allow_fn_change`` (the rows already written are kept: for a fixed function whose finished
        frames are still right).

    Holds the folder's lock until ``close()`` (a second run on the folder raises FlowlensError).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        specs: Sequence[FrameSpec],
        *,
        chunk_size: int = 32,
        fn_name: str = "",
        allow_fn_change: bool = False,
    ):
        self.out = Path(out_dir)
        self.specs = list(specs)
        if chunk_size < 1:
            raise FlowlensError(f"chunk_size must be >= 1, got {chunk_size}.")
        self.chunk_size = chunk_size
        keys = [s.key for s in self.specs]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise FlowlensError(
                f"frame keys must be unique in a plan; {dup!r} appears twice (same episode name "
                "and frame). Give episodes distinct names."
            )
        self._index = {k: i for i, k in enumerate(keys)}
        meta = {
            "magic": BATCH_MAGIC,
            "format_version": BATCH_VERSION,
            "plan_sha256": _plan_hash(self.specs),
            "num_frames": len(self.specs),
            "chunk_size": chunk_size,
            "fn": fn_name,
        }
        meta_path = self.out / "batch.json"
        # A run of ours starting right now makes the lock and batch.json (via a temporary) before
        # anything else: list first, then look for batch.json, so such a run never looks foreign.
        foreign = self.out.exists() and any(
            p.name != LOCK_NAME and not p.name.startswith(f".batch.json{TMP_MARK}") for p in self.out.iterdir()
        )
        if foreign and not meta_path.exists():
            raise FlowlensError(
                f"out_dir {str(self.out)!r} is a non-empty folder without batch.json; flowlens will "
                "not write results into it. Pick an empty or new folder."
            )
        self._lock = FolderLock(self.out, what="batch output folder").acquire(wait=False)
        try:
            self._open(meta_path, meta, "" if allow_fn_change else fn_name)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, meta_path: Path, meta: dict, fn_name: str) -> None:
        if meta_path.exists():
            old = read_json(meta_path, what="batch description")
            if old.get("magic") != BATCH_MAGIC:
                raise FlowlensError(f"{str(meta_path)!r} is not a flowlens batch description.")
            if (old.get("plan_sha256"), old.get("chunk_size")) != (meta["plan_sha256"], self.chunk_size):
                raise FlowlensError(
                    f"{str(self.out)!r} holds results of a different plan (other frames, options or "
                    f"chunk_size {old.get('chunk_size')}). Use a new out_dir, or re-run the same plan to "
                    "resume."
                )
            if old.get("fn") and fn_name and old["fn"] != fn_name:
                raise FlowlensError(
                    f"{str(self.out)!r} holds results of per-frame function {old['fn']!r}, but this run uses "
                    f"{fn_name!r}; resuming would mix the two in one table. Use a new out_dir, or resume "
                    f"with {old['fn']!r}."
                )
        else:
            write_json_atomic(meta_path, meta)
        (self.out / "parts").mkdir(parents=True, exist_ok=True)
        (self.out / "chunks").mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.out / "parts")
        remove_stale_temps(self.out / "chunks")
        self._done: set[str] = set()
        for c in range(self.num_chunks):
            if self._chunk_path(c).exists():
                self._done.update(s.key for s in self._chunk_specs(c))
        for p in (self.out / "parts").glob("*.parquet"):
            key = p.name[: -len(".parquet")]
            if key in self._done:
                p.unlink()  # a crash fell between writing the chunk and removing its parts
            elif key in self._index:
                self._done.add(key)
        self.errors: list[dict] = []

    def close(self) -> None:
        """Release the folder's lock (idempotent); the run cannot record after this."""
        self._lock.release()

    def __enter__(self) -> BatchRun:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if not self._lock.held:
            raise FlowlensError(f"the batch run on {str(self.out)!r} was closed; open a new BatchRun to resume.")

    @property
    def num_chunks(self) -> int:
        return -(-len(self.specs) // self.chunk_size)

    def _chunk_specs(self, c: int) -> list[FrameSpec]:
        return self.specs[c * self.chunk_size : (c + 1) * self.chunk_size]

    def _chunk_path(self, c: int) -> Path:
        return self.out / "chunks" / f"chunk-{c:05d}.parquet"

    def _part_path(self, key: str) -> Path:
        return self.out / "parts" / f"{key}.parquet"

    def is_done(self, spec: FrameSpec) -> bool:
        return spec.key in self._done

    def pending(self) -> list[FrameSpec]:
        """Specs not done yet, in plan order."""
        return [s for s in self.specs if s.key not in self._done]

    def record(self, spec: FrameSpec, rows) -> None:
        """Store the rows of one finished frame (atomically); compact its chunk when complete."""
        if spec.key not in self._index:
            raise FlowlensError(f"frame {spec.key} is not part of this plan.")
        self._check_open()
        _write_parquet(_as_table(spec, rows), self._part_path(spec.key))
        self._done.add(spec.key)
        c = self._index[spec.key] // self.chunk_size
        chunk = self._chunk_specs(c)
        if all(s.key in self._done for s in chunk) and not self._chunk_path(c).exists():
            lost = [s.key for s in chunk if not self._part_path(s.key).is_file()]
            if lost:  # never compact (and so mark done) a frame whose rows are not on disk
                self._done.difference_update(lost)
                raise FlowlensError(
                    f"{str(self.out)!r}: the rows of frames {lost} vanished from parts/ before their chunk was "
                    "written (another process removed them?); re-run the plan to recompute them."
                )
            _write_parquet(self._read_parts(chunk), self._chunk_path(c))
            for s in chunk:
                with contextlib.suppress(FileNotFoundError):
                    self._part_path(s.key).unlink()

    def record_error(self, spec: FrameSpec, error: BaseException) -> None:
        self._check_open()
        self.errors.append(
            {
                "episode": spec.episode,
                "frame": spec.frame,
                "key": spec.key,
                "error": f"{type(error).__name__}: {error}",
            }
        )
        with atomic_write(self.out / "errors.jsonl", "w") as f:
            f.writelines(json.dumps(e) + "\n" for e in self.errors)

    def _read_parts(self, specs: Sequence[FrameSpec]):
        import pandas as pd

        frames = [pd.read_parquet(self._part_path(s.key)) for s in specs if self._part_path(s.key).exists()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"episode": [], "frame": []})

    def table(self):
        """All recorded rows in plan order (pandas DataFrame)."""
        import pandas as pd

        pieces = []
        for c in range(self.num_chunks):
            path = self._chunk_path(c)
            pieces.append(pd.read_parquet(path) if path.exists() else self._read_parts(self._chunk_specs(c)))
        pieces = [p for p in pieces if len(p)]
        return pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame({"episode": [], "frame": []})

    def finish(self):
        """Write results.parquet and results.csv (atomically) and return the table."""
        self._check_open()
        df = self.table()
        _write_parquet(df, self.out / "results.parquet")
        with atomic_write(self.out / "results.csv", "w") as f:
            df.to_csv(f, index=False)
        return df


@dataclasses.dataclass
class BatchResult:
    """Outcome of ``run_batch``.

    Attributes:
      table: all rows (pandas DataFrame), plan order.
      parquet, csv: the result files.
      computed: frames computed in this call; skipped: frames already done before it.
      errors: frames that raised (``on_error="skip"``), as dicts with key and error.
    """

    table: object
    parquet: Path
    csv: Path
    computed: int
    skipped: int
    errors: list[dict]


def _init_worker(blas_threads: int) -> None:
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(blas_threads)


@contextlib.contextmanager
def _capped_blas(threads: int):
    old = {k: os.environ.get(k) for k in _BLAS_VARS}
    os.environ.update({k: str(threads) for k in _BLAS_VARS})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_batch(
    fn: Callable[[FrameSpec], object],
    specs: Sequence[FrameSpec],
    out_dir: str | os.PathLike,
    *,
    chunk_size: int = 32,
    workers: int = 0,
    progress: bool = True,
    on_error: str = "raise",
    blas_threads: int = 1,
    desc: str = "frames",
    allow_fn_change: bool = False,
) -> BatchResult:
    """Run ``fn`` on every spec not done yet, store its rows, and assemble the tables.

    Args:
      fn: pure per-frame function ``FrameSpec -> list[dict] | DataFrame``; module-level (picklable)
        when ``workers > 0``.
      specs: the plan (``plan_frames``), in output order.
      out_dir: results folder; re-running the same plan there resumes.
      chunk_size: frames per chunk file.
      workers: 0 runs in this process; N > 0 uses N spawned processes.
      progress: show a tqdm progress bar.
      on_error: "raise" (stop; finished frames are kept) or "skip" (log to errors.jsonl, go on;
        a re-run retries them).
      blas_threads: BLAS threads per worker process.
      allow_fn_change: resume a folder whose rows came from another per-frame function (refused by
        default: the table would mix two analyses).

    Returns:
      BatchResult with the full table and the paths of results.parquet / results.csv.
    """
    if on_error not in ("raise", "skip"):
        raise unknown_name_error("on_error", on_error, ["raise", "skip"])
    if workers < 0:
        raise FlowlensError(f"workers must be >= 0, got {workers}.")
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    with BatchRun(out_dir, specs, chunk_size=chunk_size, fn_name=name, allow_fn_change=allow_fn_change) as run:
        return _run(run, fn, name, workers=workers, progress=progress, on_error=on_error,
                    blas_threads=blas_threads, desc=desc)


def _run(run: BatchRun, fn, name: str, *, workers, progress, on_error, blas_threads, desc) -> BatchResult:
    """The loop of ``run_batch`` over ``run.pending()`` (the caller holds the run's lock)."""
    from tqdm.auto import tqdm

    todo = run.pending()
    skipped = len(run.specs) - len(todo)
    computed = 0
    bar = tqdm(total=len(run.specs), initial=skipped, disable=not progress, desc=desc, unit="frame")

    def handle(spec, rows=None, error=None):
        nonlocal computed
        if error is None:
            run.record(spec, rows)
            computed += 1
        elif on_error == "skip":
            run.record_error(spec, error)
        else:
            raise error
        bar.update(1)

    try:
        if workers == 0:
            for spec in todo:
                try:
                    rows = fn(spec)
                except Exception as e:  # noqa: BLE001 - routed by on_error
                    handle(spec, error=e)
                    continue
                handle(spec, rows)
        else:
            try:
                pickle.dumps(fn)
            except Exception as e:  # noqa: BLE001
                raise FlowlensError(
                    f"workers={workers} needs a picklable per-frame function (a module-level def), "
                    f"but {name} cannot be pickled ({e}). Use workers=0 or move it to a module."
                ) from None
            with (
                _capped_blas(blas_threads),
                ProcessPoolExecutor(
                    max_workers=workers,
                    mp_context=get_context("spawn"),
                    initializer=_init_worker,
                    initargs=(blas_threads,),
                ) as pool,
            ):
                queue = iter(todo)
                running = {}
                try:
                    while True:
                        while len(running) < 2 * workers and (spec := next(queue, None)) is not None:
                            running[pool.submit(fn, spec)] = spec
                        if not running:
                            break
                        finished, _ = wait(running, return_when=FIRST_COMPLETED)
                        failed = []
                        for fut in sorted(finished, key=lambda f: run._index[running[f].key]):
                            spec = running.pop(fut)
                            if (err := fut.exception()) is None:
                                handle(spec, fut.result())  # keep every finished frame before raising
                            else:
                                failed.append((spec, err))
                        for spec, err in failed:
                            handle(spec, error=err)
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()
    table = run.finish()
    return BatchResult(
        table=table,
        parquet=run.out / "results.parquet",
        csv=run.out / "results.csv",
        computed=computed,
        skipped=skipped,
        errors=list(run.errors),
    )
