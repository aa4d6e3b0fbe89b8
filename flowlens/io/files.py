"""File helpers for everything flowlens writes: atomic writes under the umask, safe names, JSON.

Everything flowlens writes — captures, stores, result tables, ``scores.npz``, figures, MP4s, HTML
reports — goes through ``atomic_path`` (or ``atomic_write``, its open-file form): the bytes land
in a hidden temporary sibling (``.<name>.tmp-<random><suffix>``), are flushed and fsync'ed, and only
then replace the destination with ``os.replace`` — so a reader (or a crash) sees either the old
file or the whole new one, never half of one. ``os.replace`` is atomic within one file system,
which is why the temporary file lives next to the target. The result gets the ordinary
permissions the process's umask gives a new file (0644 under umask 022), not the 0600 that
``tempfile`` uses for its temporaries; ``apply_umask`` does the same for writers that manage
their own temporaries (video files, episode folders).
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

__all__ = ["apply_umask", "atomic_path", "atomic_write", "check_format", "check_name", "dumps_json", "inside",
           "read_json", "remove_stale_temps", "safe_name", "write_json_atomic"]


def current_umask() -> int:
    """The process's umask (read from /proc where it can be; else set and restored at once)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike) -> Path:
    """Give ``path`` the permissions a new file (0666) or folder (0777) gets under the umask.

    ``tempfile.mkstemp`` / ``mkdtemp`` create 0600 / 0700 entries; a result renamed from one
    would keep them. Returns the path.
    """
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~current_umask())
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, parents: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``, else delete it.

    The temporary name keeps the suffix of ``path`` (``.a.png.tmp-XXXX.png``) so writers that infer
    the format from the extension still work. The file that appears has the umask's permissions.

    Args:
      path: the destination file.
      parents: create missing parent folders (else a missing folder is an error).
    Raises:
      FlowlensError: ``path`` is a directory, or its folder does not exist (and ``parents`` is False).

        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_path(d / "a.txt") as tmp:
        ...     _ = tmp.write_text("done")
        >>> (d / "a.txt").read_text()
        'done'
    """
    path = Path(path)
    if path.exists() and path.is_dir():
        raise FlowlensError(
            f"output path {str(path)!r} is a directory; give a file name such as "
            f"{str(path / 'figure.png')!r}."
        )
    parent = path.parent if str(path.parent) else Path(".")
    if parents:
        parent.mkdir(parents=True, exist_ok=True)
    elif not parent.is_dir():
        raise FlowlensError(
            f"the directory of the output path {str(path)!r} does not exist; create {str(parent)!r} first."
        )
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", suffix=path.suffix, dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """``atomic_path`` as an open file (``mode`` "wb" or "w"), flushed and fsync'ed before the rename.

    Missing parent folders are created. On an exception ``path`` is left untouched.
    """
    with atomic_path(path, parents=True) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


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
