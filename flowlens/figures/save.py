"""Atomic output files: a figure, video or report either appears complete or not at all.

Every writer in ``flowlens.figures`` and ``flowlens.report`` writes through
``flowlens.io.files.atomic_path`` (re-exported here): a hidden temporary file in the destination
directory, ``os.replace``-d onto the final name only after the write finished, so an interrupted
run (exception, Ctrl-C) never leaves a half-written PNG / MP4 / HTML that a later step (or a
person) would mistake for a result. This module adds the matplotlib and text conveniences.
"""

from __future__ import annotations

import os
from pathlib import Path

from flowlens.errors import FlowlensError
from flowlens.io.files import atomic_path

__all__ = ["atomic_path", "save_figure", "write_bytes", "write_text"]


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
