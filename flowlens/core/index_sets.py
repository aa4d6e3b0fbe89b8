"""Index sets: which layers, heads or denoising steps, in one spelling for the API, the CLI and files.

``"all"``, ``"9-17"`` (inclusive), ``"9:18"`` (a slice), ``"0,3,5"``, mixes (``"0-2,7"``), an
int (negative from the end), a range, a slice or a list of ints, checked against the model's size.
Part of the selection language (:mod:`flowlens.core.selection` re-exports ``index_set``).

    >>> index_set("layers", "0-2,7", 18), index_set("heads", "all", 3)
    ((0, 1, 2, 7), (0, 1, 2))
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from flowlens.errors import FlowlensError

__all__ = ["index_set"]


def index_set(argument: str, spec, size: int, what: str | None = None) -> tuple[int, ...]:
    """Sorted unique indices in ``0..size-1`` of a layer / head / step set.

    Args:
      argument: the argument name ("layers", "heads", "steps"), for messages.
      spec: None or "all" (everything), an int (negative from the end), a string of comma-separated
        ints, inclusive ranges "9-17" and slices "9:18", a range, a slice, or a sequence of ints.
      size: how many there are (the model's layers / heads, the flow's steps).
      what: the noun in messages (default ``argument``).
    Raises:
      FlowlensError: out-of-range or malformed entries, or an empty set.
    """
    what = what or argument
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return tuple(range(size))
    if isinstance(spec, bool):
        raise FlowlensError(f"{argument} must be 'all', ints or ranges such as '9-17', got {spec!r}.")
    if isinstance(spec, (int, np.integer)):
        values: Sequence[int] = [int(spec)]
    elif isinstance(spec, slice):
        values = list(range(size)[spec])
    elif isinstance(spec, str):
        values = _index_text(argument, spec, size)
    else:
        try:
            values = [int(v) for v in spec if not isinstance(v, bool) and float(v) == int(v)]
        except (TypeError, ValueError):
            raise FlowlensError(f"{argument} must be 'all', ints or ranges such as '9-17', got {spec!r}.") from None
        if len(values) != len(list(spec)):
            raise FlowlensError(f"{argument} must hold ints, got {spec!r}.")
    bad = [v for v in values if not -size <= v < size]
    if bad:
        raise FlowlensError(
            f"{argument}: {what} {bad[0]} out of range: there are {size} {what} (0–{size - 1}); e.g. "
            f"{argument}='0-{size - 1}' or 'all'.")
    out = tuple(sorted({v % size for v in values}))
    if not out:
        raise FlowlensError(f"{argument}={spec!r} selects no {what}; give at least one (0–{size - 1}) or 'all'.")
    return out


def _index_text(argument: str, spec: str, size: int) -> list[int]:
    values: list[int] = []
    for part in spec.replace(" ", "").split(","):
        try:
            if m := re.fullmatch(r"(\d+)-(\d+)", part):
                a, b = int(m.group(1)), int(m.group(2))
                if b < a:
                    raise ValueError
                values += list(range(a, b + 1))
            elif ":" in part:
                bits = [int(b) if b else None for b in part.split(":")]
                values += list(range(size)[slice(*bits)])
            else:
                values.append(int(part))
        except ValueError:
            raise FlowlensError(
                f"{argument}={spec!r}: {part!r} is not an int, an inclusive range 'a-b' (a <= b) or a slice "
                "'a:b'; e.g. '9-17', '0,3,5' or 'all'.") from None
    return values
