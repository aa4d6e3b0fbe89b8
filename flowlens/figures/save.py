"""Atomic output files: a figure, video or report either appears complete or not at all.

Every writer in ``flowlens.figures`` and ``flowlens.report`` writes to a hidden temporary file in
the destination directory and ``os.replace``-s it onto the final name only after the write
finished, so an interrupted run (exception, Ctrl-C) never leaves a half-written PNG / MP4 / HTML
that a later step (or a person) would mistake for a result. ``os.replace`` is atomic within one
file system, which is why the temporary file lives next to the target.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from flowlens.errors import FlowlensError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``, else delete it.

    The temporary name keeps the suffix of ``path`` (``.name.tmp-XXXX.png``) so writers that infer
    the format from the extension still work.

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
    if not parent.is_dir():
        raise FlowlensError(
            f"the directory of the output path {str(path)!r} does not exist; create {str(parent)!r} first."
        )
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def save_figure(
    fig, path: str | os.PathLike, *, dpi: int | None = None, close: bool = False, **savefig_kwargs
) -> Path:
    """Save a matplotlib figure atomically (format from the suffix: .png, .pdf, .svg, ...).

    Args:
      fig: a ``matplotlib.figure.Figure``.
      path: destination file.
      dpi: resolution (default: the figure's own).
      close: close the figure afterwards (frees memory in long loops).
    Returns:
      The destination path.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or None
    if fmt is None:
        raise FlowlensError(
            f"path {str(path)!r} has no suffix; add one (.png, .pdf, .svg) to choose the format."
        )
    savefig_kwargs.setdefault("bbox_inches", "tight")
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, **savefig_kwargs)
    finally:
        if close:
            import matplotlib.pyplot as plt

            plt.close(fig)
    return path
