"""CaptureStore: an appendable, resumable on-disk store of many captures (frames × episodes).

A store is a folder::

    <store>/
      store.json          {"magic": "flowlens-store", "format_version": 1, "policy", "precision",
                           "compress", "error_bound"} — written once, at creation
      index.json          {"entries": [{"key", "file", "bytes", "max_abs_error", "metadata"}, ...]}
                          — rewritten atomically after every entry, in insertion order
      entries/<key>.flcap one ``.flcap`` file per capture (format: ``flowlens.io.capture_file``),
                          written atomically before the index names it

Crash safety: an entry file appears whole or not at all (temporary file + ``os.replace``), and the
index is replaced atomically after it, so a crash loses at most the capture being written. On open,
an entry file the index does not list yet (the crash fell between the two renames) is checked and
adopted; leftover temporary files are removed. Integrity: on open every indexed entry must exist
and have its recorded size (``verify()`` re-reads every checksum). Missing or damaged entries are
listed in ``store.problems``, drop out of ``keys()`` so a resumed run recomputes them, and their
files are never deleted: writing the key again first renames the damaged file to
``<key>.flcap.corrupt-<n>``. A capture that fails validation or the storage policy raises before
anything is written.

Concurrent writers: every write (``put``, and the clean-up and adoption of ``open_store(mode="a")``)
holds the store's lock (``flowlens.io._lock``: ``flock`` on ``<store>/.flowlens.lock``; writers
wait for each other) and first re-reads ``index.json``, so processes appending to one store never
drop each other's index lines, never remove each other's temporary files and never take each
other's entries for damaged ones. Readers re-read the index when it changed on disk (``key in
store``, ``keys()``).

Trust: every path comes from a file only through ``inside()`` and must be ``entries/<key>.flcap``;
symbolic links in ``entries/`` are never followed or adopted. An entry is adopted only when its
manifest's precision and policy are the store's and its measured error is within the store's
bound. One unreadable or crafted entry is listed in ``problems``; the rest of the store stays
readable.

Storage policies (what of each capture is kept; applied by ``apply_policy``):

- ``full``: every pass, every head, every row.
- ``fused``: every pass and row, heads fused by their mean (``head_reduction="mean"``).
- ``rows_for_rollout``: fused heads, only *valid* query rows: the prefix pass's image/text rows
  (masked camera and padding rows dropped) plus every step's state and action rows — exactly what
  rollout of the action queries through all layers needs.
- ``action_rows``: fused heads, only each step's action rows (no prefix pass) — enough for raw
  action→token attention maps, not for rollout.

Bytes per frame on disk, Pi0 LIBERO layout (n = 867 = 816 prefix + 1 state + 50 actions, 18
layers, 8 heads, 10 denoising steps, third camera masked, a 13-token prompt: 525 valid prefix rows),
measured with ``benchmarks/bench_store.py``; ``policy_bytes`` computes the raw numbers. Deflate
(``compress=True``) figures are for random attention, where only the exact zeros of masked keys
compress; real attention will compress differently (not measured here):

==================  ==========  ==========  ==========  ==========
policy              float32     float16     bfloat16    uint8
==================  ==========  ==========  ==========  ==========
full                638.3 MB    319.1 MB    319.1 MB    160.4 MB
fused               79.8 MB     39.9 MB     39.9 MB     20.1 MB
  deflated          37.8 MB     18.4 MB     16.1 MB     10.1 MB
rows_for_rollout    62.7 MB     31.4 MB     31.4 MB     15.8 MB
  deflated          37.8 MB     18.3 MB     16.1 MB     10.1 MB
action_rows         31.2 MB     15.6 MB     15.6 MB     7.9 MB
  deflated          19.1 MB     9.3 MB      8.2 MB      5.1 MB
==================  ==========  ==========  ==========  ==========

(``uint8`` includes 4 bytes per stored row for its scale.) The ten denoising steps' suffix rows
(51 × 867 per layer and step) weigh as much as the valid prefix rows; record fewer steps where an
analysis needs fewer.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from flowlens.core.capture import AttentionPass, Capture, PassKind
from flowlens.errors import FlowlensError, unknown_name_error
from flowlens.io import precision as _precision
from flowlens.io.files import (
    TMP_MARK,
    check_format,
    check_name,
    inside,
    read_json,
    remove_stale_temps,
    safe_name,
    write_json_atomic,
)
from flowlens.io._lock import LOCK_NAME, FolderLock
from flowlens.io.capture_file import load_capture, read_manifest, verify_file, write_capture

STORE_MAGIC = "flowlens-store"
STORE_VERSION = 1
POLICIES = ("full", "fused", "rows_for_rollout", "action_rows")
MAX_KEY_LEN = 200  # entries/<key>.flcap and its temporary name stay under the 255-byte file-name limit


def frame_key(episode: str, frame: int) -> str:
    """The store / batch key of one frame: ``<safe episode name>__f<frame:06d>``."""
    return f"{safe_name(episode, fallback='episode')}__f{int(frame):06d}"


# ---- storage policies -----------------------------------------------------------------------
def _fused(p: AttentionPass, rows: np.ndarray | None = None) -> AttentionPass:
    """Fuse heads by the mean (layer by layer, to bound temporaries), keeping ``rows`` (positions
    on the pass's query axis; None = all)."""
    if p.head_reduction not in (None, "mean"):
        raise FlowlensError(
            f"cannot store heads fused by their mean: the {p.kind.value} pass was recorded with "
            f"head_reduction={p.head_reduction!r}. Use policy='full' to store it as recorded."
        )
    sel = slice(None) if rows is None else rows
    probs = np.stack([p.probs[i][:, sel].mean(axis=0, dtype=np.float32) for i in range(p.probs.shape[0])])
    return AttentionPass(p.kind, probs[:, None], p.layers, p.query_rows[sel], p.step, p.time, "mean")


def apply_policy(capture: Capture, policy: str) -> Capture:
    """Reduce a capture to what storage ``policy`` keeps (see the module docstring).

    Shapes: ``full`` keeps ``[layer, head, query, key]``; the others return passes with one fused
    head ``[layer, 1, query', key]`` where ``query'`` is the kept subset of rows.
    """
    if policy not in POLICIES:
        raise unknown_name_error("policy", policy, POLICIES)
    if not isinstance(capture, Capture):
        raise FlowlensError(f"capture must be a flowlens Capture, got {type(capture).__name__}.")
    if policy == "full":
        return capture
    layout = capture.layout
    valid = layout.valid
    action_seg = layout.actions
    passes = []
    for p in capture.passes:
        if policy == "fused":
            passes.append(_fused(p))
        elif policy == "rows_for_rollout":
            passes.append(_fused(p, np.flatnonzero(valid[p.query_rows])))
        elif p.kind != PassKind.PREFIX:  # action_rows
            if action_seg is None:
                raise FlowlensError("policy='action_rows' needs a layout with an action segment.")
            keep = np.flatnonzero((p.query_rows >= action_seg.start) & (p.query_rows < action_seg.stop))
            passes.append(_fused(p, keep))
    if policy == "action_rows" and not any(p.query_rows.size for p in passes):
        raise FlowlensError(
            "policy='action_rows' keeps the action query rows of suffix/full passes, but this capture "
            f"recorded none (passes: {[p.kind.value for p in capture.passes]}). Record the denoising "
            "steps' action rows, or use policy='rows_for_rollout' / 'fused'."
        )
    return dataclasses.replace(capture, passes=tuple(passes))


def policy_bytes(
    layout, *, num_layers: int, num_heads: int, num_steps: int, policy: str, precision: str = "float32"
) -> int:
    """Raw bytes of the stored probabilities of one frame under ``policy`` / ``precision`` (no
    compression, no metadata) for a capture with a prefix pass and ``num_steps`` suffix passes."""
    per = {"float32": 4, "float16": 2, "bfloat16": 2, "uint8": 1}[_precision.check_precision(precision)]
    valid = layout.valid
    pre, suf = layout.prefix_len, layout.n - layout.prefix_len
    heads = num_heads if policy == "full" else 1
    if policy in ("full", "fused"):
        rows = [(pre, pre)] + [(suf, layout.n)] * num_steps
    elif policy == "rows_for_rollout":
        rows = [(int(valid[:pre].sum()), pre)] + [(int(valid[pre:].sum()), layout.n)] * num_steps
    else:
        rows = [(layout.actions.size, layout.n)] * num_steps
    total = 0
    for q, k in rows:
        total += num_layers * heads * q * (k * per + (4 if precision == "uint8" else 0))
    return total


# ---- the store ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EntryInfo:
    """One stored capture.

    Attributes:
      key: the entry's name (``frame_key(episode, frame)`` by convention).
      file: path relative to the store folder.
      bytes: size of the file on disk.
      max_abs_error: measured max |stored − original| of its probabilities (0 for float32).
      metadata: the capture's metadata (prompt, frame, episode, ...).
    """

    key: str
    file: str
    bytes: int
    max_abs_error: float
    metadata: dict


@dataclasses.dataclass(frozen=True)
class StoreProblem:
    """An entry the integrity check rejected; its file (if any) is kept as is."""

    key: str
    file: str
    reason: str


class CaptureStore:
    """A folder of captures under one storage policy and precision. Open with ``open_store``."""

    def __init__(
        self,
        root: Path,
        config: dict,
        entries: dict[str, EntryInfo],
        problems: list[StoreProblem],
        writable: bool,
    ):
        self.root = root
        self.policy: str = config["policy"]
        self.precision: str = config["precision"]
        self.compress: bool = bool(config["compress"])
        self.error_bound: float = float(config["error_bound"])
        self._entries = entries
        self.problems = problems
        self.writable = writable
        self._config = config
        self._lock = FolderLock(root, what="capture store")
        self._index_stamp = _stamp(root / "index.json")

    # ---- reading -----------------------------------------------------------------------
    def keys(self) -> list[str]:
        """Keys of the intact entries, in insertion order."""
        self._refresh()
        return list(self._entries)

    def __contains__(self, key: str) -> bool:
        if key not in self._entries:
            self._refresh()
        return key in self._entries

    def _refresh(self) -> None:
        """Take in entries another process indexed since we last read ``index.json``."""
        stamp = _stamp(self.root / "index.json")
        if stamp == self._index_stamp:
            return
        self._index_stamp = stamp
        listed, _ = _read_index(self.root)
        fresh, _ = _check_listed(self.root, [e for e in listed if e.key not in self._entries])
        self._entries.update(fresh)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def info(self, key: str) -> EntryInfo:
        if key not in self._entries:
            raise self._missing(key)
        return self._entries[key]

    def get(self, key: str) -> Capture:
        """Load the capture stored under ``key`` (float32 probabilities, checksums checked; its
        precision and policy must be the store's)."""
        path = _entry_path(self.root, self.info(key))
        _check_entry(read_manifest(path), self._config, where=str(path))
        return load_capture(path)

    def _missing(self, key: str) -> FlowlensError:
        bad = [p for p in self.problems if p.key == key]
        if bad:
            return FlowlensError(
                f"store {str(self.root)!r}: entry {key!r} is damaged ({bad[0].reason}); "
                "write it again to replace it (the damaged file is kept aside)."
            )
        keys = self.keys()
        shown = keys[:5] + (["..."] if len(keys) > 5 else [])
        return FlowlensError(
            f"store {str(self.root)!r} has no entry {key!r}; it holds {len(keys)} entries: {shown}."
        )

    @property
    def max_abs_error(self) -> float:
        """The largest measured precision error over all entries (≤ ``error_bound``)."""
        return max((e.max_abs_error for e in self._entries.values()), default=0.0)

    @property
    def bytes_on_disk(self) -> int:
        return sum(e.bytes for e in self._entries.values())

    def verify(self) -> list[StoreProblem]:
        """Re-read every entry and check all checksums; damaged entries move to ``problems``.
        Returns the new problems."""
        new = []
        for key, e in list(self._entries.items()):
            try:
                verify_file(self.root / e.file)
            except FlowlensError as err:
                new.append(StoreProblem(key, e.file, str(err)))
                del self._entries[key]
        self.problems.extend(new)
        return new

    # ---- writing -----------------------------------------------------------------------
    def put(self, key: str, capture: Capture, *, overwrite: bool = False) -> EntryInfo:
        """Store ``capture`` under ``key`` (policy and precision of the store applied).

        Nothing is written unless the capture passes the policy; an existing intact entry is only
        replaced with ``overwrite=True``; a damaged one is renamed aside first.
        """
        if not self.writable:
            raise FlowlensError(f"store {str(self.root)!r} was opened read-only; open it with mode='a'.")
        check_name("key", key)
        if len(key) > MAX_KEY_LEN:
            raise FlowlensError(
                f"key must be at most {MAX_KEY_LEN} characters (it names the entry's file), got {len(key)}: "
                f"{key[:40]!r}…. Shorten it, e.g. with flowlens.io.safe_name(name, max_len={MAX_KEY_LEN})."
            )
        reduced = apply_policy(capture, self.policy)
        rel = f"entries/{key}.flcap"
        path = self.root / rel
        with self._lock:
            self._refresh()
            if key in self._entries and not overwrite:
                raise FlowlensError(
                    f"store {str(self.root)!r} already holds {key!r}; skip it (``key in store``) or pass "
                    "overwrite=True to replace it."
                )
            if (path.exists() or path.is_symlink()) and key not in self._entries:
                _set_aside(path)
            manifest = write_capture(
                reduced, path, precision=self.precision, compress=self.compress, policy=self.policy
            )
            info = EntryInfo(
                key, rel, path.stat().st_size, float(manifest["max_abs_error"]), manifest["metadata"]
            )
            self._entries[key] = info
            self.problems = [p for p in self.problems if p.key != key]
            self._write_index()
        return info

    def _write_index(self) -> None:
        """Rewrite index.json from ``_entries`` (callers hold the lock and have refreshed)."""
        write_json_atomic(
            self.root / "index.json", {"entries": [dataclasses.asdict(e) for e in self._entries.values()]}
        )
        self._index_stamp = _stamp(self.root / "index.json")

    def __repr__(self) -> str:
        return (
            f"CaptureStore({str(self.root)!r}, policy={self.policy}, precision={self.precision}, "
            f"{len(self)} entries, {self.bytes_on_disk / 1e6:.1f} MB, {len(self.problems)} problems)"
        )


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _entry_path(root: Path, e: EntryInfo) -> Path:
    """The file of entry ``e``: must be ``entries/<key>.flcap`` inside ``root`` and not a link."""
    if e.file != f"entries/{e.key}.flcap":
        raise FlowlensError(
            f"store {str(root)!r}: entry {e.key!r} names file {e.file!r}; entries live at "
            f"'entries/{e.key}.flcap'. The index was edited; fix or delete index.json (it is rebuilt)."
        )
    if (root / e.file).is_symlink():
        raise FlowlensError(f"store {str(root)!r}: entry file {e.file!r} is a symbolic link; links are not followed.")
    return inside(root, e.file, what=f"entry {e.key!r} file")


def _check_entry(manifest: dict, config: dict, *, where: str) -> None:
    """An entry must have the store's precision and policy, and an error within its bound."""
    for name in ("precision", "policy"):
        if name == "policy" and manifest.get("format_version") == 1 and "policy" not in manifest:
            continue  # format-1 capture files did not record the policy
        if manifest.get(name, "float32" if name == "precision" else None) != config[name]:
            raise FlowlensError(
                f"{where} has {name} {manifest.get(name)!r}, but the store's is {config[name]!r}; it was not "
                "written by this store."
            )
    err = manifest.get("max_abs_error")
    if not isinstance(err, (int, float)) or not 0 <= err <= float(config["error_bound"]):
        raise FlowlensError(f"{where} has max_abs_error {err!r}, above the store's bound {config['error_bound']}.")


def _set_aside(path: Path) -> Path:
    n = 0
    while (aside := path.with_name(f"{path.name}.corrupt-{n}")).exists():
        n += 1
    os.replace(path, aside)
    return aside


def open_store(
    path: str | os.PathLike,
    *,
    policy: str | None = None,
    precision: str | None = None,
    compress: bool = False,
    mode: str = "a",
) -> CaptureStore:
    """Open (mode ``"a"``: create if missing) or read (mode ``"r"``) a capture store.

    Args:
      path: the store folder.
      policy: storage policy for a new store (default ``rows_for_rollout``); for an existing
        store it must match (or be None).
      precision: ``float32`` (default), ``float16``, ``bfloat16`` or ``uint8``; same rule.
      compress: deflate entries (new stores only).
      mode: ``"a"`` read/append, ``"r"`` read-only.

    Returns:
      The store; ``store.problems`` lists entries the integrity check rejected.
    """
    if mode not in ("a", "r"):
        raise unknown_name_error("mode", mode, ["a", "r"])
    root = Path(path)
    config_path = root / "store.json"
    if not config_path.exists():
        if mode == "r" or (root.exists() and not root.is_dir()):
            raise FlowlensError(
                f"{str(root)!r} is not a flowlens capture store (no store.json). Create one "
                "with open_store(path, policy=..., mode='a')."
            )
        # A writer creating the store right now makes the lock, entries/ and store.json (via a
        # temporary) before anything else: list first, then look for store.json again.
        foreign = root.exists() and any(
            p.name not in (LOCK_NAME, "entries") and not p.name.startswith(f".store.json{TMP_MARK}")
            for p in root.iterdir()
        )
        if foreign and not config_path.exists():
            raise FlowlensError(
                f"{str(root)!r} is a non-empty folder without store.json; flowlens will not "
                "write a store into it. Pick an empty or new folder."
            )
        new_policy = policy or "rows_for_rollout"
        new_precision = precision or "float32"
        if new_policy not in POLICIES:
            raise unknown_name_error("policy", new_policy, POLICIES)
        _precision.check_precision(new_precision)
        with FolderLock(root, what="capture store"):
            if not config_path.exists():
                (root / "entries").mkdir(parents=True, exist_ok=True)
                write_json_atomic(
                    config_path,
                    {
                        "magic": STORE_MAGIC,
                        "format_version": STORE_VERSION,
                        "policy": new_policy,
                        "precision": new_precision,
                        "compress": bool(compress),
                        "error_bound": _precision.ERROR_BOUND[new_precision],
                    },
                )
    config = read_json(config_path, what="store config")
    check_format(config, key="magic", magic=STORE_MAGIC, version=STORE_VERSION, what="store config",
                 where=str(config_path))
    _check_config(config, config_path)
    for name, want in (("policy", policy), ("precision", precision)):
        if want is not None and config[name] != want:
            raise FlowlensError(
                f"store {str(root)!r} uses {name}={config[name]!r}, but {name}={want!r} was asked for. "
                f"Open it with {name}={config[name]!r} (or None), or use a new folder."
            )
    if mode == "r":
        entries, problems, _ = _scan(root, config, writable=False)
        return CaptureStore(root, config, entries, problems, writable=False)
    with FolderLock(root, what="capture store"):
        entries, problems, adopted = _scan(root, config, writable=True)
        store = CaptureStore(root, config, entries, problems, writable=True)
        if adopted:
            store._write_index()
    return store


def _check_config(config: dict, path: Path) -> None:
    checks = {
        "policy": lambda v: v in POLICIES,
        "precision": lambda v: v in _precision.PRECISIONS,
        "compress": lambda v: isinstance(v, bool),
        "error_bound": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    }
    for name, ok in checks.items():
        if name not in config or not ok(config[name]):
            found = f"no {name!r}" if name not in config else f"{name}={config[name]!r}"
            raise FlowlensError(
                f"store config {str(path)!r} has {found}; a store config holds policy (one of "
                f"{list(POLICIES)}), precision (one of {list(_precision.PRECISIONS)}), compress (bool) and "
                "error_bound (number). Restore store.json."
            )


def _read_index(root: Path) -> tuple[list[EntryInfo], list[StoreProblem]]:
    index_path = root / "index.json"
    if not index_path.exists():
        return [], []
    try:
        raw = read_json(index_path, what="store index")["entries"]
        listed = [EntryInfo(**e) for e in raw]
        for e in listed:
            check_name("index key", e.key)
    except (FlowlensError, KeyError, TypeError) as e:
        return [], [StoreProblem("<index>", "index.json", f"unreadable index ({e}); rebuilt from the entry files")]
    return listed, []


def _check_listed(root: Path, listed: list[EntryInfo]) -> tuple[dict[str, EntryInfo], list[StoreProblem]]:
    """The listed entries whose file is where it must be, not a link and of the recorded size."""
    entries: dict[str, EntryInfo] = {}
    problems: list[StoreProblem] = []
    for e in listed:
        try:
            path = _entry_path(root, e)
        except FlowlensError as err:
            problems.append(StoreProblem(e.key, str(e.file), str(err)))
            continue
        if not path.is_file():
            problems.append(StoreProblem(e.key, e.file, "file missing"))
        elif path.stat().st_size != e.bytes:
            problems.append(
                StoreProblem(
                    e.key,
                    e.file,
                    f"size {path.stat().st_size} bytes, index says {e.bytes} (truncated or overwritten)",
                )
            )
        else:
            entries[e.key] = e
    return entries, problems


def _scan(root: Path, config: dict, *, writable: bool) -> tuple[dict[str, EntryInfo], list[StoreProblem], bool]:
    """Read the index, check each entry's place and size, adopt complete unindexed entries that
    match the store (precision, policy, error bound); list everything else as a problem."""
    listed, problems = _read_index(root)
    entries, bad = _check_listed(root, listed)
    problems += bad
    entry_dir = root / "entries"
    if writable:
        remove_stale_temps(entry_dir)
    known = {e.file for e in listed}
    adopted = False
    for path in sorted(entry_dir.glob("*.flcap")) if entry_dir.is_dir() else []:
        rel = f"entries/{path.name}"
        if rel in known:
            continue
        key = path.name[: -len(".flcap")]
        if path.is_symlink():
            problems.append(StoreProblem(key, rel, "unindexed symbolic link; links are never adopted"))
            continue
        try:
            manifest = verify_file(path)  # full checksum check before adopting
            _check_entry(manifest, config, where=f"unindexed entry file {rel!r}")
        except (FlowlensError, MemoryError, OSError) as err:
            problems.append(StoreProblem(key, rel, f"unindexed and not adopted: {err}"))
            continue
        entries[key] = EntryInfo(
            key, rel, path.stat().st_size, float(manifest["max_abs_error"]), manifest["metadata"]
        )
        adopted = True
    return entries, problems, adopted
