"""Evaluating hypotheses over many frames: per-frame values in, one tidy test table out.

``evaluate(hypotheses, evidences)`` = batched interventions (each hypothesis's ``prefetch``) →
``frame_values`` for every frame → ``summarize``. The two halves are separate so that a long run
can commit each frame's values as it goes (``flowlens hypothesis`` does, resumably) and test at the
end.

The table has one row per hypothesis × sweep value, in the order given: ``hypothesis``, ``sweep``,
``test``, ``a`` / ``b`` (what is compared: the compare keys, the two groups, or "value" / the null),
``n``, ``n_a``, ``n_b``, ``mean_a``, ``mean_b``, ``effect`` (a − b), ``ci_low`` / ``ci_high``
(bootstrap, ``confidence``), ``std_effect`` (Cohen's d), ``p_value`` (permutation test),
``p_adjusted`` (within the hypothesis's sweep, by its ``correction``), ``correction``,
``alternative``, ``description``. ``correct(table, "bh")`` adds ``p_family`` across a whole table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from flowlens.errors import FlowlensError
from flowlens.hypotheses import stats
from flowlens.hypotheses.evidence import prefetch_actions
from flowlens.hypotheses.hypothesis import VALUE_COLUMNS, Hypothesis, frame_values, sweep_label

TABLE_COLUMNS = ("hypothesis", "sweep", "test", "a", "b", "n", "n_a", "n_b", "mean_a", "mean_b", "effect", "ci_low",
                 "ci_high", "std_effect", "p_value", "p_adjusted", "correction", "alternative", "description")


@dataclasses.dataclass(frozen=True, eq=False)
class HypothesisResult:
    """``table``: the tests (columns ``TABLE_COLUMNS``); ``values``: the per-frame values behind them."""

    table: object
    values: object


def check_hypotheses(hypotheses) -> list[Hypothesis]:
    """A list of distinct-named Hypothesis objects (FlowlensError naming the culprit otherwise)."""
    hs = [hypotheses] if isinstance(hypotheses, Hypothesis) else list(hypotheses)
    if not hs:
        raise FlowlensError("no hypotheses given; define at least one flowlens.hypotheses.Hypothesis.")
    for i, h in enumerate(hs):
        if not isinstance(h, Hypothesis):
            raise FlowlensError(f"hypotheses[{i}] must be a flowlens.hypotheses.Hypothesis, got {type(h).__name__}.")
    names = [h.name for h in hs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise FlowlensError(f"hypothesis names must be unique; {dup} appear more than once. Rename them.")
    return hs


def _groups(h: Hypothesis, seen: list[str]) -> tuple[str, str]:
    if h.groups is not None:
        return str(h.groups[0]), str(h.groups[1])
    if set(seen) == {"True", "False"}:
        return "True", "False"
    if len(seen) != 2:
        raise FlowlensError(
            f"hypothesis {h.name!r}: label {h.by!r} takes {len(seen)} values {seen} over these frames; a two-sample "
            f"test needs two groups. Pass groups=(a, b) to choose them, or add frames of the missing group."
        )
    return seen[0], seen[1]


def _one(h: Hypothesis, sub, **kw) -> dict:
    """Test one (hypothesis, sweep value) from its value rows."""
    vals = sub[sub.condition == "value"].set_index("key").value
    try:
        if h.test == "paired":
            wide = sub.pivot(index="key", columns="condition", values="value")
            a, b = h.compare
            res = stats.paired(wide[a].to_numpy(), wide[b].to_numpy(), alternative=h.alternative, **kw)
        elif h.test == "two_sample":
            seen = sorted(sub.group[sub.condition == "value"].unique().tolist())
            a, b = _groups(h, seen)
            va, vb = (sub.value[(sub.condition == "value") & (sub.group == g)].to_numpy() for g in (a, b))
            for g, v in ((a, va), (b, vb)):
                if v.size == 0:
                    raise FlowlensError(
                        f"group {h.by}={g} has no frames (values seen: {seen}); add frames of that group or pass "
                        "groups= with values that occur."
                    )
            res = stats.two_sample(va, vb, alternative=h.alternative, **kw)
            a, b = f"{h.by}={a}", f"{h.by}={b}"
        else:
            if callable(h.null):
                nul = sub[sub.condition == "null"].set_index("key").value.reindex(vals.index).to_numpy()
                b = "null"
            else:
                nul = 0.0 if h.null is None else float(h.null)
                b = f"null={nul:g}"
            a = "value"
            res = stats.one_sample(vals.to_numpy(), nul, alternative=h.alternative, **kw)
    except FlowlensError as e:
        raise FlowlensError(f"hypothesis {h.name!r} (sweep {sub.sweep.iloc[0]!r}): {e}") from None
    return {"test": h.test, "a": a, "b": b, **{k: v for k, v in res.to_dict().items() if k != "test"}}


def summarize(values, hypotheses: Sequence[Hypothesis], *, confidence: float = 0.95, n_resamples: int = 9999,
                seed: int = 0):
    """The test table (see the module docstring) from per-frame values (``frame_values`` rows).

    Raises:
      FlowlensError: a hypothesis or sweep value without frames, an empty or missing group, fewer
        than two frames.
    """
    import pandas as pd

    hs = check_hypotheses(hypotheses)
    df = values if isinstance(values, pd.DataFrame) else pd.DataFrame(list(values), columns=list(VALUE_COLUMNS))
    missing = [c for c in VALUE_COLUMNS if c not in df.columns]
    if missing:
        raise FlowlensError(f"values lack the columns {missing}; pass the rows frame_values returned.")
    df = df.assign(sweep=df.sweep.fillna("").astype(str), group=df.group.fillna("").astype(str))
    out = []
    for h in hs:
        rows = []
        for value in h.points():
            label = sweep_label(value)
            sub = df[(df.hypothesis == h.name) & (df.sweep == label)]
            if not len(sub):
                raise FlowlensError(
                    f"hypothesis {h.name!r}" + (f" (sweep {label!r})" if label else "") + " has no values: its "
                    "statistic returned None for every frame. Check the statistic or the frames it is run on."
                )
            rows.append({"hypothesis": h.name, "sweep": label,
                         **_one(h, sub, confidence=confidence, n_resamples=n_resamples, seed=seed)})
        adj = stats.adjust([r["p_value"] for r in rows], h.correction)
        for r, p in zip(rows, adj, strict=True):
            r.update(p_adjusted=float(p), correction=h.correction, alternative=h.alternative,
                     description=h.description)
        out += rows
    return pd.DataFrame(out, columns=list(TABLE_COLUMNS))


def correct(table, method: str = "bh"):
    """``table`` with ``p_family``: its p-values adjusted together ("holm", "bh" or "none")."""
    return table.assign(p_family=stats.adjust(table.p_value.to_numpy(), method))


def evaluate(hypotheses, evidences: Sequence, *, progress: bool = False, batch_size: int = 32,
             confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0) -> HypothesisResult:
    """Run hypotheses over frames: batched interventions, per-frame values, tests.

    Args:
      hypotheses: Hypothesis objects (distinct names).
      evidences: one ``Evidence`` per frame (distinct keys).
      progress: tqdm bar over frames.
      batch_size: frames per sampler call of the ``prefetch`` interventions.
      confidence, n_resamples, seed: of the bootstrap and the permutation test.
    Returns:
      HypothesisResult(table, values).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    hs = check_hypotheses(hypotheses)
    evs = list(evidences)
    keys = [ev.key for ev in evs]
    if len(set(keys)) != len(keys):
        raise FlowlensError("evidence keys must be unique; the same frame key appears twice.")
    for h in hs:
        if h.prefetch is not None:
            for value in h.points():
                for kos in h.prefetch(value):
                    prefetch_actions(evs, kos, batch_size=batch_size)
    rows = []
    for ev in tqdm(evs, disable=not progress, desc="frames", unit="frame"):
        rows += frame_values(hs, ev)
    values = pd.DataFrame(rows, columns=list(VALUE_COLUMNS))
    table = summarize(values, hs, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return HypothesisResult(table=table, values=values)


def values_for(values, hypothesis: str, sweep: str = "") -> np.ndarray:
    """float [frames]: the "value" rows of one hypothesis and sweep label (for plots and checks)."""
    sub = values[(values.hypothesis == hypothesis) & (values.sweep == sweep) & (values.condition == "value")]
    return sub.value.to_numpy(dtype=np.float64)
