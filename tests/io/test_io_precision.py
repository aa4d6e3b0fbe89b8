import numpy as np
import pytest

from flowlens.errors import FlowlensError
from flowlens.io.precision import ERROR_BOUND, PRECISIONS, decode, encode, encode_with_error


@pytest.mark.parametrize("precision", PRECISIONS)
def test_bound_holds_and_is_tight_over_the_whole_unit_interval(precision):
    rng = np.random.default_rng(0)
    probs = rng.random((2, 3, 40, 500), dtype=np.float32)
    probs[..., 0] = 1.0  # rows reach 1: the uint8 scale is 1, the coarsest case
    stored, scale, err = encode_with_error(probs, precision)
    back = decode(stored, precision, scale)
    assert back.dtype == np.float32 and back.shape == probs.shape
    measured = float(np.abs(back - probs).max())
    assert measured == pytest.approx(err, abs=1e-9)
    assert measured <= ERROR_BOUND[precision]
    if precision != "float32":
        assert measured > 0.9 * ERROR_BOUND[precision] - 2e-6  # the stated bound is not loose


def test_exact_values_and_zero_rows():
    probs = np.array(
        [[[[0.0, 0.25, 0.5, 1.0]], [[0.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 0.375, 0.0]]]], np.float32
    )
    for precision in ("float32", "float16", "bfloat16"):  # dyadic values are exact
        stored, scale = encode(probs, precision)
        np.testing.assert_array_equal(decode(stored, precision, scale), probs)
    stored, scale = encode(probs, "uint8")  # zeros and each row's max are exact
    back = decode(stored, "uint8", scale)
    np.testing.assert_array_equal(back[probs == 0], 0)
    np.testing.assert_allclose(back.max(-1), probs.max(-1), rtol=1e-6)


def test_bfloat16_rounds_to_nearest_even():
    x = np.array([1.0 + 2**-8, 1.0 + 3 * 2**-8], np.float32)  # exactly halfway between bf16 neighbours
    stored, _ = encode(x, "bfloat16")
    np.testing.assert_array_equal(decode(stored, "bfloat16"), [1.0, 1.0 + 2**-6])


def test_unknown_precision():
    with pytest.raises(FlowlensError, match="Did you mean 'float16'"):
        encode(np.zeros(3, np.float32), "float61")
