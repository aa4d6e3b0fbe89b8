"""Argument checks at the public entry points: the form of what a caller hands in.

One place turns a wrong type, dtype, rank, empty axis, index list, scalar option or record into a
``FlowlensError`` that names the argument, says what was expected and what was received, and
suggests the fix. The *values* of attention arrays (NaN, sign, row sums) are checked by
``core.capture.check_probabilities``; heads by ``core.graph.check_heads``; query names by
``core.query``.

Index arguments (``query=``, ``sources=``, ``layers=``) are strict: ints, sequences of ints or int
arrays. Floats are refused, even integral ones (``1.7`` and ``1.0`` alike), and so are bools,
except that where the number of tokens is known a boolean *mask* with one flag per token selects
the tokens it marks.

    >>> index_array("query", [3, 1]).tolist(), index_array("query", np.array([0, 1, 1, 0], bool), size=4).tolist()
    ([3, 1], [1, 2])
"""

from __future__ import annotations

import numpy as np

from flowlens.errors import FlowlensError, unknown_name_error

LAYER_IDS = "a non-empty int or list of ints (model layer ids)"
STEP_IDS = "'all', a non-empty int or list of ints (denoising step ids)"
_KINDS = {"i": "int", "u": "unsigned int", "f": "float", "b": "bool"}


def _describe(value) -> str:
    text = repr(value)
    return (text[:60] + "…" if len(text) > 60 else text) + f" ({type(value).__name__})"


def real_array(argument: str, value, *, ndim: int | tuple[int, ...] | None = None, kinds: str = "iuf",
               shape_hint: str = "") -> np.ndarray:
    """``value`` as a real numeric ndarray with no empty axis.

    Args:
      argument: the argument's name, for messages.
      ndim: the accepted number(s) of axes (None: any).
      kinds: accepted dtype kinds ("i" int, "u" unsigned, "f" float, "b" bool); object, string and
        complex arrays are always refused.
      shape_hint: the expected shape in words, e.g. "[layer, head, query, key]".
    Returns:
      the array (not copied when it already is one).
    """
    want = f" {shape_hint}" if shape_hint else ""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as err:  # ragged nested lists
        raise FlowlensError(f"{argument} must be a numeric array{want}, got {_describe(value)}: {err}.") from None
    if arr.dtype.kind not in kinds:
        names = " or ".join(_KINDS[k] for k in kinds)
        raise FlowlensError(
            f"{argument} must be a numeric ({names}) array{want}, got dtype {arr.dtype}; convert it "
            "with np.asarray(..., dtype=np.float32)."
        )
    axes = (ndim,) if isinstance(ndim, int) else ndim
    if axes is not None and arr.ndim not in axes:
        raise FlowlensError(
            f"{argument} must have {' or '.join(map(str, axes))} axes{want}, got shape {arr.shape}."
        )
    if arr.size == 0:
        raise FlowlensError(f"{argument} has an empty axis (shape {arr.shape}); pass at least one entry per axis.")
    return arr


def index_array(argument: str, value, *, size: int | None = None,
                expected: str = "a non-empty int or sequence of ints (token indices)") -> np.ndarray:
    """int64 [k] indices from an int, a sequence of ints or an int array (k >= 1).

    With ``size`` (the number of tokens), a bool array of shape ``(size,)`` is read as a mask and
    gives the indices it marks. Ranges are the caller's to check. ``expected`` words what the
    argument accepts in the message.

    Raises:
      FlowlensError: floats (even integral ones), bools other than such a mask, strings, nested
        lists, empty selections.
    """
    one = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    try:
        arr = None if isinstance(value, (str, bytes, bool, np.bool_)) else np.asarray([value] if one else value)
        if arr is not None and arr.dtype == object and arr.ndim == 1 and all(
                isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in arr.tolist()):
            arr = arr.astype(np.int64)
    except (TypeError, ValueError, OverflowError):  # ragged nested lists, ints beyond int64
        arr = None
    if arr is not None and arr.dtype == bool and arr.ndim == 1 and size is not None and arr.shape == (size,):
        arr = np.flatnonzero(arr)
        if arr.size == 0:
            raise FlowlensError(f"{argument} is a bool mask that marks no token; mark at least one.")
    if arr is None or arr.dtype.kind not in "iu" or arr.ndim != 1 or arr.size == 0:
        why = (" (beyond int64)" if one else "" if arr is None or arr.size == 0 else
               " (floats such as 1.7 or 1.0 are not indices)" if arr.dtype.kind == "f" else
               f" (a bool mask needs one flag per token, {size})" if arr.dtype == bool and size else "")
        raise FlowlensError(f"{argument} must be {expected}, got {_describe(value)}{why}; e.g. {argument}=[0, 2].")
    if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        raise FlowlensError(f"{argument} holds an index too large for any layout: {int(arr.max())}.")
    return arr.astype(np.int64)


def real_number(argument: str, value, advice: str = "") -> float:
    """A real scalar (int or float, numpy or 0-d array) as a float; bools, strings, arrays refused."""
    arr = None if isinstance(value, (bool, np.bool_, str, bytes)) else np.asarray(value)
    if arr is None or arr.ndim != 0 or arr.dtype.kind not in "iuf":
        raise FlowlensError(f"{argument} must be a number, got {_describe(value)}.{' ' + advice if advice else ''}")
    return float(arr)


def check_residual(residual) -> float | None:
    """A residual weight r: a real number in [0, 1], or None (no residual). Bools and strings are refused."""
    if residual is None:
        return None
    r = real_number("residual", residual, "Use a value in [0, 1] (0.5 as in Abnar & Zuidema) or None.")
    if not 0.0 <= r <= 1.0:
        raise FlowlensError(
            f"residual must be in [0, 1] (0.5 in Abnar & Zuidema; None or 0 for no residual), got {r}."
        )
    return r


def whole_number(argument: str, value) -> int:
    """An int (Python or numpy); floats, bools and strings are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise FlowlensError(f"{argument} must be an int, got {_describe(value)}.")
    return int(value)


def check_choice(argument: str, value, choices: tuple[str, ...]) -> str:
    """One of the option names ``choices`` (a suggestion when a string is close to one)."""
    if isinstance(value, str):
        if value not in choices:
            raise unknown_name_error(argument, value, choices)
        return value
    raise FlowlensError(f"{argument} must be one of {list(choices)}, got {_describe(value)}.")


def check_flag(argument: str, value) -> bool:
    """A yes/no option: ``True`` or ``False`` (numpy bools too); anything else is refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise FlowlensError(f"{argument} must be True or False, got {_describe(value)}.")
    return bool(value)


def check_type(argument: str, value, expected: type | tuple[type, ...], advice: str = ""):
    """``value`` when it is an instance of ``expected``; else an error naming both types."""
    if not isinstance(value, expected):
        names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
        article = "an" if names[0] in "AEIOU" else "a"
        raise FlowlensError(
            f"{argument} must be {article} {names}, got {_describe(value)}.{' ' + advice if advice else ''}"
        )
    return value
