"""The one error type flowlens raises at its public entry points, and helpers that word it.

Every message names the argument, what was expected, what was received, and suggests a fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FlowlensError(ValueError):
    """Bad input to a flowlens entry point (argument, expectation, what was received, a fix)."""


def short_text(text: str, limit: int = 120) -> str:
    """``repr(text)``, cut to about ``limit`` characters with the full length said ("'pick…' (5000 characters)")."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest of ``choices``, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def unknown_name_error(argument: str, name: str, choices: Iterable[str]) -> FlowlensError:
    """An error for a name that is not one of ``choices``, listing them with a suggestion."""
    choices = list(choices)
    return FlowlensError(
        f"{argument}={name!r} is not known; expected one of {choices}.{did_you_mean(name, choices)}"
    )


def check_index(argument: str, value: int, size: int, what: str) -> int:
    """Validate ``0 <= value < size`` (negative indices count from the end), return it normalised.

    ``what`` names the axis in the message, e.g. ``check_index("layer", 25, 18, "layers")`` raises
    "layer 25 out of range: this capture has 18 layers (0–17)".
    """
    if isinstance(value, bool) or not isinstance(value, (int,)) and not hasattr(value, "__index__"):
        raise FlowlensError(f"{argument} must be an integer, got {value!r} ({type(value).__name__}).")
    value = int(value)
    if not -size <= value < size:
        raise FlowlensError(
            f"{argument} {value} out of range: this capture has {size} {what} (0–{size - 1})."
        )
    return value % size
