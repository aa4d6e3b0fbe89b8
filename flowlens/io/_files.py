"""Small file helpers shared by flowlens.io: atomic writes, safe names, JSON with numpy scalars.

Everything flowlens writes goes through ``atomic_write``: the bytes land in a temporary file in the
destination folder (``.<name>.tmp-<random>``), are flushed and fsync'ed, and only then replace
the destination with ``os.replace`` — so a reader (or a crash) sees either the old file or the
whole new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from flowlens.errors import FlowlensError

TMP_MARK = ".tmp-"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable where the OS allows it (no-op on platforms without O_DIRECTORY).
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    text = dumps_json(obj, indent=1)
    with atomic_write(path, "w") as f:
        f.write(text)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def dumps_json(obj, *, what: str = "metadata", **kwargs) -> str:
    """``json.dumps`` that accepts numpy scalars / arrays (as lists); FlowlensError otherwise."""
    try:
        return json.dumps(obj, default=_json_default, allow_nan=True, **kwargs)
    except (TypeError, ValueError) as e:
        raise FlowlensError(
            f"{what} must be JSON-serialisable (str, numbers, bools, None, lists, dicts, numpy scalars), "
            f"but {e}. Convert the offending value to one of those types."
        ) from None


def read_json(path: Path, *, what: str) -> dict:
    """Read a JSON object from ``path``; FlowlensError naming the file on any problem."""
    if not path.is_file():
        raise FlowlensError(f"{what} {str(path)!r} does not exist.")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FlowlensError(f"{what} {str(path)!r} is not valid JSON ({e}); is the file truncated?") from None
    if not isinstance(obj, dict):
        raise FlowlensError(f"{what} {str(path)!r} must hold a JSON object, got {type(obj).__name__}.")
    return obj


def check_format(
    desc: dict, *, key: str, magic: str, version: int, what: str, where: str, fix: str = "Upgrade flowlens."
) -> None:
    """Refuse a file description that is not ours or is newer than this flowlens reads.

    ``desc[key]`` must equal ``magic`` and ``desc["format_version"]`` be an int in 1..``version``;
    otherwise FlowlensError naming ``where`` (the file or folder), what was found and ``fix``.
    """
    if desc.get(key) != magic:
        raise FlowlensError(f"{where!r} is not a flowlens {what} ({key} {desc.get(key)!r}, expected {magic!r}).")
    found = desc.get("format_version")
    if not isinstance(found, int) or not 1 <= found <= version:
        raise FlowlensError(
            f"{what} {where!r} has format_version {found!r}; this flowlens reads 1..{version}. {fix}"
        )


def safe_name(text: str, *, max_len: int = 120, fallback: str = "item") -> str:
    """A file-name-safe version of ``text``: only ``[A-Za-z0-9_.-]``, no leading dots, bounded length.

    >>> safe_name("pick up the ../../black bowl")
    'pick_up_the_.._.._black_bowl'
    """
    name = _SAFE.sub("_", str(text).strip()).strip("_")
    name = name.lstrip(".")[:max_len]
    return name or fallback


def check_name(argument: str, name: str) -> str:
    """Validate that ``name`` is already a safe single path component; FlowlensError otherwise."""
    if not isinstance(name, str) or not name or safe_name(name, max_len=10**6, fallback="") != name:
        raise FlowlensError(
            f"{argument} must be a non-empty name of letters, digits, '_', '.', '-' not starting with '.', "
            f"got {name!r}. Use flowlens.io.safe_name({name!r}) -> {safe_name(str(name))!r}."
        )
    return name


def inside(root: Path, relative: str, *, what: str) -> Path:
    """Resolve ``relative`` under ``root``; FlowlensError when it would leave ``root``."""
    root_r = root.resolve()
    target = (root_r / relative).resolve()
    if target != root_r and root_r not in target.parents:
        raise FlowlensError(
            f"{what} {relative!r} points outside {str(root)!r}; flowlens only reads files inside the "
            "dataset / episode folder. Fix the reference in the metadata file."
        )
    return target


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove temporary files left by an interrupted ``atomic_write`` in ``folder``; return them."""
    removed = []
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(".") and TMP_MARK in p.name and p.is_file():
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
    return removed
