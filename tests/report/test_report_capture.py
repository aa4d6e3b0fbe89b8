import numpy as np
import pytest

from flowlens.errors import FlowlensError
from flowlens.report import build_report, report_frame
from flowlens.testing import synthetic_capture


@pytest.fixture(scope="module")
def toy():
    return synthetic_capture("toy", num_layers=3, num_heads=2, num_steps=2)


def test_report_frame_from_capture(toy):
    frame = report_frame(toy, {"base_0_rgb": np.zeros((8, 8, 3), np.uint8)}, label="frame 5")
    raw, roll = frame.scores["raw"], frame.scores["rollout"]
    assert raw.shape == (2, 3, 3, toy.layout.n)  # steps, layers, mean + 2 heads, tokens
    assert roll.shape == (2, 3, 1, toy.layout.n)
    np.testing.assert_allclose(raw[:, :, 0], raw[:, :, 1:].mean(axis=2), rtol=1e-6)
    np.testing.assert_allclose(np.nansum(raw, axis=-1), 1.0, rtol=1e-5)
    assert np.isnan(raw[..., ~toy.layout.valid]).all()
    act = toy.layout.actions
    expected = toy.step(1).probs[2, 0, act.start - toy.layout.prefix_len :].mean(axis=0)
    valid = toy.layout.valid
    np.testing.assert_allclose(raw[1, 2, 1][valid], expected[valid], rtol=1e-6)
    assert "frame 5" in build_report([frame])


def test_report_frame_prefix_query_and_extra(toy):
    flow = np.ones((1, 1, 1, toy.layout.n), np.float32)
    frame = report_frame(toy, group="words", extra={"flow": flow})
    assert frame.scores["raw"].shape[0] == 1  # prefix queries: one (prefix) pass
    assert set(frame.scores) == {"raw", "rollout", "flow"}
    with pytest.raises(FlowlensError, match="Did you mean 'raw'"):
        report_frame(toy, methods=("raws",))
    with pytest.raises(FlowlensError, match="prefix and suffix"):
        report_frame(toy, query=[0, toy.layout.n - 1])
