"""Statistical tests of per-frame values: effect size, bootstrap interval, permutation p-value, corrections.

Three forms, each returning one ``TestResult``:

- ``one_sample(x, null)``: is the mean of ``x`` different from ``null`` (a number, or one null per
  frame such as that frame's chance level)? The permutation test flips the signs of ``x - null``
  (valid when the differences are symmetric about 0 under the null);
- ``paired(a, b)``: the same frames measured two ways (clean vs knocked out, route A vs route B);
  the permutation test swaps the two values within frames;
- ``two_sample(a, b)``: two groups of frames (success vs failure); the permutation test shuffles
  the group labels.

The effect is the mean difference (``mean(x - null)``, ``mean(a - b)``, ``mean(a) - mean(b)``); the
standardised effect is Cohen's d (mean difference over its standard deviation; pooled for two
samples). Intervals come from ``scipy.stats.bootstrap`` (BCa), p-values from
``scipy.stats.permutation_test``: both are scipy's, seeded, and reproducible.

``adjust(p, "holm" | "bh" | "none")`` corrects a family of p-values (a sweep over layer windows or
heads): Holm's step-down family-wise correction, or Benjamini–Hochberg's false discovery rate
(``scipy.stats.false_discovery_control``).

    >>> holm([0.01, 0.04, 0.03])
    array([0.03, 0.06, 0.06])
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from flowlens.errors import FlowlensError, unknown_name_error

ALTERNATIVES = ("two-sided", "greater", "less")
CORRECTIONS = ("holm", "bh", "none")


@dataclasses.dataclass(frozen=True)
class TestResult:
    """One test's outcome.

    Attributes:
      test: "one_sample", "paired" or "two_sample".
      n: frames used (paired / one-sample) or frames in both groups (two-sample).
      n_a, n_b: frames in the first / second group (two-sample; else n and n).
      mean_a, mean_b: mean of the first values / of the null or second values.
      effect: mean difference (a − b, or x − null).
      ci_low, ci_high: bootstrap confidence interval of ``effect``.
      std_effect: Cohen's d (NaN when the differences have no spread).
      p_value: permutation-test p-value.
    """

    __test__ = False  # not a pytest class

    test: str
    n: int
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    effect: float
    ci_low: float
    ci_high: float
    std_effect: float
    p_value: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _values(name: str, x) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if arr.size < 2:
        raise FlowlensError(f"{name} needs at least 2 values for a test, got {arr.size}; add frames.")
    if not np.isfinite(arr).all():
        raise FlowlensError(f"{name} holds NaN or infinite values; every per-frame value must be finite.")
    return arr


def _check(alternative: str, confidence: float, n_resamples: int) -> None:
    if alternative not in ALTERNATIVES:
        raise unknown_name_error("alternative", alternative, ALTERNATIVES)
    if not 0 < confidence < 1:
        raise FlowlensError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence!r}.")
    if int(n_resamples) < 99:
        raise FlowlensError(f"n_resamples must be at least 99, got {n_resamples!r}.")


def _mean_diff(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def _interval(data, statistic, *, confidence: float, n_resamples: int, seed: int) -> tuple[float, float]:
    """BCa bootstrap interval; a sample without spread has the point estimate as its interval."""
    from scipy import stats

    point = float(statistic(*data))
    if all(np.ptp(d) == 0 for d in data):
        return point, point
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa on near-degenerate data: fall back below
        res = stats.bootstrap(data, statistic, vectorized=True, confidence_level=confidence,
                              n_resamples=int(n_resamples), method="BCa", rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            res = stats.bootstrap(data, statistic, vectorized=True, confidence_level=confidence,
                                  n_resamples=int(n_resamples), method="percentile",
                                  rng=np.random.default_rng(seed))
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return lo, hi


def _pvalue(data, statistic, *, kind: str, alternative: str, n_resamples: int, seed: int) -> float:
    from scipy import stats

    res = stats.permutation_test(data, statistic, permutation_type=kind, vectorized=True,
                                 n_resamples=int(n_resamples), alternative=alternative,
                                 rng=np.random.default_rng(seed))
    return float(res.pvalue)


def _interval_and_p(data, statistic, *, kind: str, alternative: str, confidence: float, n_resamples: int,
                    seed: int) -> tuple[float, float, float]:
    """(ci_low, ci_high, p_value) of one test: permutation ``kind`` "samples" (one sample: sign flips)
    or "independent" (two groups: shuffled labels)."""
    lo, hi = _interval(data, statistic, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return lo, hi, _pvalue(data, statistic, kind=kind, alternative=alternative, n_resamples=n_resamples, seed=seed)


def _cohen(d: np.ndarray) -> float:
    sd = float(np.std(d, ddof=1))
    return float(np.mean(d) / sd) if sd > 0 else float("nan")


def one_sample(x, null=0.0, *, alternative: str = "two-sided", confidence: float = 0.95,
               n_resamples: int = 9999, seed: int = 0) -> TestResult:
    """Test mean(x − null) = 0 by sign flips.

    Args:
      x: float [n] per-frame values.
      null: a number or float [n] per-frame null values (e.g. chance).
      alternative: "two-sided", "greater" (x above the null) or "less".
    """
    _check(alternative, confidence, n_resamples)
    x = _values("one_sample x", x)
    nul = np.broadcast_to(np.asarray(null, dtype=np.float64), x.shape).astype(np.float64)
    if not np.isfinite(nul).all():
        raise FlowlensError("one_sample null holds NaN or infinite values; give a finite null per frame.")
    d = x - nul
    lo, hi, p = _interval_and_p((d,), np.mean, kind="samples", alternative=alternative, confidence=confidence,
                                n_resamples=n_resamples, seed=seed)
    return TestResult("one_sample", d.size, d.size, d.size, float(x.mean()), float(nul.mean()), float(d.mean()),
                      lo, hi, _cohen(d), p)


def paired(a, b, *, alternative: str = "two-sided", confidence: float = 0.95, n_resamples: int = 9999,
           seed: int = 0) -> TestResult:
    """Test mean(a − b) = 0 for values of the same frames (a[i] and b[i] belong together).

    Swapping a[i] and b[i] flips the sign of a[i] − b[i], and resampling pairs resamples the
    differences: this is ``one_sample(a − b, 0)`` with the means of a and b reported.
    """
    a, b = _values("paired a", a), _values("paired b", b)
    if a.shape != b.shape:
        raise FlowlensError(f"paired a and b must hold one value per frame each; got {a.size} and {b.size}.")
    r = one_sample(a - b, 0.0, alternative=alternative, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return dataclasses.replace(r, test="paired", mean_a=float(a.mean()), mean_b=float(b.mean()))


def two_sample(a, b, *, alternative: str = "two-sided", confidence: float = 0.95, n_resamples: int = 9999,
               seed: int = 0) -> TestResult:
    """Test mean(a) = mean(b) for two independent groups of frames by shuffling group labels."""
    _check(alternative, confidence, n_resamples)
    a, b = _values("two_sample a", a), _values("two_sample b", b)
    lo, hi, p = _interval_and_p((a, b), _mean_diff, kind="independent", alternative=alternative,
                                confidence=confidence, n_resamples=n_resamples, seed=seed)
    pooled = np.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    effect = float(a.mean() - b.mean())
    d = effect / pooled if pooled > 0 else float("nan")
    return TestResult("two_sample", a.size + b.size, a.size, b.size, float(a.mean()), float(b.mean()), effect,
                      lo, hi, float(d), p)


def _pvalues(p) -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64).reshape(-1)
    if arr.size and (not np.isfinite(arr).all() or (arr < 0).any() or (arr > 1).any()):
        raise FlowlensError(f"p-values must be finite numbers in [0, 1], got {arr.tolist()}.")
    return arr


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), in the input order: float [m] → [m]."""
    p = _pvalues(p)
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (false discovery rate), in the input order: [m] → [m]."""
    from scipy import stats

    p = _pvalues(p)
    return stats.false_discovery_control(p, method="bh") if p.size else p


def adjust(p, method: str = "holm") -> np.ndarray:
    """Adjusted p-values of one family: ``method`` "holm", "bh" or "none" (unchanged)."""
    if method not in CORRECTIONS:
        raise unknown_name_error("correction", method, CORRECTIONS)
    if method == "holm":
        return holm(p)
    if method == "bh":
        return benjamini_hochberg(p)
    return _pvalues(p).copy()
