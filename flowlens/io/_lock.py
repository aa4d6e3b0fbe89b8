"""One writer per folder: an advisory ``fcntl.flock`` on ``<folder>/.flowlens.lock``.

A batch run holds its output folder's lock for the whole run and a second run on the same folder
fails at once with a ``FlowlensError`` naming the folder and the holder (pid, host, start time,
which the holder writes into the lock file). A capture store takes its lock around each write, so
concurrent writers wait for each other briefly instead of failing.

The lock is released when the holder closes it, exits or is killed (the kernel drops ``flock``
locks with the process), so a crash never leaves a folder locked. The lock file itself stays.
POSIX only: where ``fcntl`` is missing (Windows) locking is a no-op and concurrent writers are
not detected. Locks on network file systems are as reliable as the file system's ``flock``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
from pathlib import Path

from flowlens.errors import FlowlensError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".flowlens.lock"


class FolderLock:
    """The lock of one folder (``<folder>/.flowlens.lock``); ``what`` names the folder's role in
    messages ("batch output folder", "capture store")."""

    def __init__(self, folder: str | os.PathLike, *, what: str):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self, *, wait: bool) -> FolderLock:
        """Take the lock; ``wait=False`` raises FlowlensError naming the holder when it is taken."""
        if self._file is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise FlowlensError(
                    f"{self.what} {str(self.folder)!r} is in use by {holder}; two runs must not write one "
                    "folder at once. Wait for that run to finish (a killed run releases it at once), or "
                    "use another folder."
                ) from None
        f.seek(0)
        f.truncate()
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        f, self._file = self._file, None
        if f is not None:
            with contextlib.suppress(OSError):
                f.truncate(0)
            f.close()  # closing the descriptor drops the flock

    def __enter__(self) -> FolderLock:
        return self.acquire(wait=True)

    def __exit__(self, *exc) -> None:
        self.release()
