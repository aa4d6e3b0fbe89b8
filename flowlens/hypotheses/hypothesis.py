"""Hypothesis: a named per-frame statistic, a grouping and a test, evaluated over many frames into a table.

A statistic is a plain function of one frame's ``Evidence`` (and, in a sweep, of the sweep value)
that returns a number — or, for a paired comparison, a dict of two numbers. The form of the test
follows from what is given:

- ``null=`` (default 0): one-sample, the mean differs from the null (a number, or a function of
  the evidence giving each frame's own null, e.g. its chance level);
- ``compare=("a", "b")``: paired, the statistic returns ``{"a": ..., "b": ...}`` per frame;
- ``by="success"``: two-sample, frames split by a label (``groups=(True, False)`` picks and orders
  two of its values; first minus second).

``sweep=[...]`` evaluates the statistic at every value (layer windows, heads ...) and corrects the
p-values across the sweep (``correction="holm"``, "bh" or "none"). A statistic may return None
for a frame it does not apply to; NaN, infinities and other types are refused. Three hypotheses:

    >>> import numpy as np
    >>> from flowlens.hypotheses import Hypothesis
    >>> mass = lambda ev, g: ev.labels["mass"][g]
    >>> h1 = Hypothesis("words carry more than chance", lambda ev: ev.labels["words"], null=0.25)
    >>> h2 = Hypothesis("words vs patches", lambda ev: {"words": ev.labels["words"],
    ...                 "patches": ev.labels["patches"]}, compare=("words", "patches"))
    >>> h3 = Hypothesis("failures read fewer words", lambda ev: ev.labels["words"], by="success")
    >>> h1.test, h2.test, h3.test
    ('one_sample', 'paired', 'two_sample')

``evaluate(hypotheses, evidences)`` runs them (``frame_values`` per frame, then ``summarize``)
and returns a ``HypothesisResult``: ``table`` (one row per hypothesis × sweep value: n, means,
effect, confidence interval, standardised effect, p-value, adjusted p-value) and ``values`` (the
tidy per-frame values behind it).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from flowlens.errors import FlowlensError
from flowlens.hypotheses import stats

VALUE_COLUMNS = ("key", "hypothesis", "sweep", "condition", "group", "value")


@dataclasses.dataclass(frozen=True)
class Hypothesis:
    """A named statistic, a grouping and a test (see the module docstring).

    Attributes:
      name: unique name, used in tables and figures.
      statistic: ``f(evidence)`` or, with ``sweep``, ``f(evidence, value)`` → number | dict | None.
      null: one-sample null: a number or ``f(evidence[, value])`` → number.
      compare: paired: the two keys of the statistic's dict (effect = first − second).
      by: two-sample: the label splitting the frames.
      groups: two-sample: the two label values compared (first − second); default: the two seen.
      sweep: values passed to the statistic, one test each.
      correction: "holm", "bh" or "none" across the sweep.
      alternative: "two-sided", "greater" or "less" (of the effect).
      prefetch: optional ``f(value)`` → list of knockout lists to sample for all frames in batches
        before the statistic runs (``prefetch_actions``); value is None without a sweep.
      description: a sentence for reports.
    """

    name: str
    statistic: Callable
    null: float | Callable | None = None
    compare: tuple[str, str] | None = None
    by: str | None = None
    groups: tuple | None = None
    sweep: Sequence | None = None
    correction: str = "holm"
    alternative: str = "two-sided"
    prefetch: Callable | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise FlowlensError(f"Hypothesis.name must be a non-empty string, got {self.name!r}.")
        if not callable(self.statistic):
            raise FlowlensError(
                f"hypothesis {self.name!r}: statistic must be a function of the evidence, got "
                f"{type(self.statistic).__name__}."
            )
        forms = [f for f, on in (("null", self.null is not None), ("compare", self.compare is not None),
                                 ("by", self.by is not None)) if on]
        if len(forms) > 1:
            raise FlowlensError(
                f"hypothesis {self.name!r}: give one of null= (one-sample), compare= (paired) or by= "
                f"(two-sample), got {', '.join(forms)}."
            )
        if self.compare is not None:
            c = tuple(self.compare)
            if len(c) != 2 or not all(isinstance(x, str) for x in c) or c[0] == c[1]:
                raise FlowlensError(
                    f"hypothesis {self.name!r}: compare must be two different dict keys, e.g. "
                    f"compare=('words', 'patches'); got {self.compare!r}."
                )
            object.__setattr__(self, "compare", c)
        if self.groups is not None and (self.by is None or len(tuple(self.groups)) != 2):
            raise FlowlensError(
                f"hypothesis {self.name!r}: groups= needs by= and exactly two label values, got {self.groups!r}."
            )
        stats.adjust([], self.correction)  # checks the name
        stats._check(self.alternative, 0.95, 99)
        if self.sweep is not None:
            values = list(self.sweep)
            if not values:
                raise FlowlensError(f"hypothesis {self.name!r}: sweep is empty; give the values to test.")
            object.__setattr__(self, "sweep", tuple(values))

    @property
    def test(self) -> str:
        return "paired" if self.compare else "two_sample" if self.by else "one_sample"

    def points(self) -> list:
        """The sweep values (``[None]`` without a sweep)."""
        return list(self.sweep) if self.sweep is not None else [None]


def sweep_label(value) -> str:
    """How a sweep value is written in tables: "" for none, ranges as "a-b", else ``str``."""
    if value is None:
        return ""
    if isinstance(value, range) and value.step == 1 and len(value):
        return f"{value.start}-{value.stop - 1}"
    return str(value)


def _call(fn: Callable, ev, value):
    return fn(ev) if value is None else fn(ev, value)


def _number(h: Hypothesis, ev, value, out, what: str) -> float:
    where = f"hypothesis {h.name!r} on frame {ev.key!r}" + (f" (sweep {sweep_label(value)})" if value is not None
                                                           else "")
    if isinstance(out, np.ndarray) and out.size == 1:
        out = out.reshape(()).item()
    if isinstance(out, bool | np.bool_) or not isinstance(out, numbers.Real):
        raise FlowlensError(
            f"{where}: the {what} must return a number, got {type(out).__name__} ({out!r:.60}); "
            "return a float (or None to skip the frame)."
        )
    x = float(out)
    if not math.isfinite(x):
        raise FlowlensError(
            f"{where}: the {what} returned {x}; return a finite number (or None to skip a frame where it "
            "does not apply)."
        )
    return x


def frame_values(hypotheses: Sequence[Hypothesis], ev) -> list[dict]:
    """One frame's tidy values: a dict per (hypothesis, sweep value, condition) with the columns
    ``VALUE_COLUMNS`` (condition "value", "null", or a compare key; group: the ``by`` label as text)."""
    rows = []
    for h in hypotheses:
        for value in h.points():
            try:
                out = _call(h.statistic, ev, value)
                null = None if h.null is None or not callable(h.null) else _call(h.null, ev, value)
            except FlowlensError as e:
                raise FlowlensError(f"hypothesis {h.name!r} on frame {ev.key!r}: {e}") from None
            if out is None:
                continue
            base = {"key": ev.key, "hypothesis": h.name, "sweep": sweep_label(value), "group": ""}
            if h.by is not None:
                if h.by not in ev.labels:
                    raise FlowlensError(
                        f"hypothesis {h.name!r}: frame {ev.key!r} has no label {h.by!r} to group by; its labels "
                        f"are {sorted(ev.labels)}. Add the label or group by one of those."
                    )
                base["group"] = str(ev.labels[h.by])
            if h.compare is not None:
                if not isinstance(out, Mapping) or set(out) != set(h.compare):
                    got = sorted(out) if isinstance(out, Mapping) else type(out).__name__
                    raise FlowlensError(
                        f"hypothesis {h.name!r} on frame {ev.key!r}: a paired statistic must return a dict with "
                        f"exactly the keys {list(h.compare)}, got {got}."
                    )
                for c in h.compare:
                    rows.append({**base, "condition": c, "value": _number(h, ev, value, out[c], f"statistic[{c!r}]")})
                continue
            rows.append({**base, "condition": "value", "value": _number(h, ev, value, out, "statistic")})
            if null is not None:
                rows.append({**base, "condition": "null", "value": _number(h, ev, value, null, "null")})
    return rows
