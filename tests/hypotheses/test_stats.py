"""The statistics of flowlens.hypotheses: literal values, coverage, power and calibration."""

import numpy as np
import pytest

from flowlens import FlowlensError
from flowlens.hypotheses import adjust, benjamini_hochberg, holm, one_sample, paired, two_sample


def test_holm_literal_values():
    # sorted p: .01 .02 .03 .04 .20 → ×5 ×4 ×3 ×2 ×1 = .05 .08 .09 .08 .20 → running max .05 .08 .09 .09 .20
    p = [0.03, 0.01, 0.2, 0.04, 0.02]
    np.testing.assert_allclose(holm(p), [0.09, 0.05, 0.2, 0.09, 0.08])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    np.testing.assert_allclose(adjust(p, "holm"), holm(p))


def test_benjamini_hochberg_literal_values():
    # sorted p: .01 .02 .03 .04 .20 → ×5/1 ×5/2 ×5/3 ×5/4 ×5/5 = .05 .05 .05 .05 .20 (min from the top)
    p = [0.03, 0.01, 0.2, 0.04, 0.02]
    np.testing.assert_allclose(benjamini_hochberg(p), [0.05, 0.05, 0.2, 0.05, 0.05])
    np.testing.assert_allclose(benjamini_hochberg([0.01, 0.04, 0.03]), [0.03, 0.04, 0.04])
    np.testing.assert_allclose(adjust(p, "none"), p)


def test_adjust_refuses_bad_input():
    with pytest.raises(FlowlensError, match="correction"):
        adjust([0.1], "bonferoni")
    with pytest.raises(FlowlensError, match=r"\[0, 1\]"):
        holm([0.1, 1.5])


def test_one_sample_exact_sign_flip_p_value():
    # 3 values → 2³ = 8 sign patterns, enumerated exactly; only ±(1, 2, 3) reach |mean| ≥ 2.
    r = one_sample([1.0, 2.0, 3.0], 0.0, n_resamples=999)
    assert r.p_value == pytest.approx(2 / 8)
    assert (r.effect, r.mean_a, r.mean_b, r.n) == (2.0, 2.0, 0.0, 3)
    assert one_sample([1.0, 2.0, 3.0], 0.0, alternative="greater", n_resamples=999).p_value == pytest.approx(1 / 8)


def test_paired_and_two_sample_literal_effects():
    r = paired([3.0, 5.0, 7.0, 9.0], [1.0, 2.0, 3.0, 4.0], n_resamples=999)
    assert r.effect == pytest.approx(3.5) and r.p_value == pytest.approx(2 / 16)  # 2⁴ swaps, exact
    t = two_sample([1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], n_resamples=999)
    assert t.effect == pytest.approx(2.0 - 5.5) and (t.n_a, t.n_b) == (3, 4)
    assert t.p_value == pytest.approx(2 / 35)  # C(7, 3) = 35 splits, exact; only the two extremes
    assert t.std_effect < -2


def test_no_spread_gives_a_point_interval():
    r = one_sample([0.5] * 6, 0.25, n_resamples=999)
    assert (r.ci_low, r.ci_high, r.effect) == (0.25, 0.25, 0.25)


def test_bootstrap_interval_covers_a_known_mean():
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(40):
        x = rng.normal(2.0, 1.0, 40)
        r = one_sample(x, 0.0, n_resamples=999, seed=int(rng.integers(1 << 30)))
        covered += r.ci_low <= 2.0 <= r.ci_high
    assert covered >= 34  # nominal 95 % of 40 = 38; binomial 1 % tail ≈ 34


def test_planted_effect_is_found_and_no_effect_is_not():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.0, 1.0, 60), rng.normal(0.8, 1.0, 60)
    assert two_sample(a, b, n_resamples=999).p_value < 0.01
    assert paired(a + 0.5, a + rng.normal(0, 0.3, 60), n_resamples=999).p_value < 0.01
    assert one_sample(rng.normal(0.6, 1.0, 50), 0.0, n_resamples=999).p_value < 0.01


def test_too_few_or_non_finite_values_are_refused():
    with pytest.raises(FlowlensError, match="at least 2"):
        one_sample([1.0])
    with pytest.raises(FlowlensError, match="NaN"):
        two_sample([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(FlowlensError, match="one value per frame"):
        paired([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(FlowlensError, match="alternative"):
        one_sample([1.0, 2.0], alternative="bigger")


@pytest.mark.slow
def test_permutation_p_values_are_uniform_under_the_null():
    from scipy import stats

    rng = np.random.default_rng(2026)
    p_two, p_one = [], []
    for _ in range(200):
        x = rng.normal(0.0, 1.0, 24)
        p_two.append(two_sample(x[:12], x[12:], n_resamples=999, seed=int(rng.integers(1 << 30))).p_value)
        p_one.append(one_sample(rng.normal(0.0, 1.0, 16), 0.0, n_resamples=999,
                                seed=int(rng.integers(1 << 30))).p_value)
    for p in (p_two, p_one):
        assert stats.kstest(p, "uniform").pvalue > 0.01
        assert 0.02 <= np.mean(np.asarray(p) < 0.05) <= 0.09  # the false-positive rate is ≈ 5 %
