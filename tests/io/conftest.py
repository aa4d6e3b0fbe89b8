"""Fixtures for the flowlens.io tests: small random captures over real openpi layouts.

The suite runs with ``--import-mode=importlib``, so shared builders are handed out as fixtures.
"""

from __future__ import annotations

import numpy as np
import pytest

from flowlens.core.capture import Capture, make_capture
from flowlens.core.openpi_layout import pi0_layout


def small_layout(prompt: str = "put the bowl on the plate"):
    """A Pi0-shaped layout with 2x2 patches, 8 text tokens and 4 actions (n = 12 + 8 + 1 + 4 = 25)."""
    return pi0_layout(prompt, max_token_len=8, action_horizon=4, grid=(2, 2))


def random_rows(rng, layout, rows: np.ndarray, keys: int, layers: int, heads: int) -> np.ndarray:
    """Row-stochastic float32 [layer, head, len(rows), keys] respecting openpi's block-causal mask;
    invalid query rows are uniform (as openpi's softmax over all-masked logits returns)."""
    mask = layout.attention_mask()[rows][:, :keys]
    logits = rng.normal(size=(layers, heads, len(rows), keys)).astype(np.float32) * 2.0
    e = np.where(mask, np.exp(logits), 0.0)
    dead = ~mask.any(axis=1)
    e[..., dead, :] = 1.0
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def random_capture(
    seed: int = 0,
    *,
    layout=None,
    num_layers: int = 3,
    num_heads: int = 2,
    num_steps: int = 2,
    metadata: dict | None = None,
) -> Capture:
    layout = layout or small_layout()
    rng = np.random.default_rng(seed)
    prefix = random_rows(rng, layout, np.arange(layout.prefix_len), layout.prefix_len, num_layers, num_heads)
    steps = [
        random_rows(rng, layout, np.arange(layout.prefix_len, layout.n), layout.n, num_layers, num_heads)
        for _ in range(num_steps)
    ]
    actions = rng.normal(size=(layout.actions.horizon, 7)).astype(np.float32)
    return make_capture(
        layout,
        prefix_probs=prefix,
        step_probs=steps,
        actions=actions,
        model="synthetic",
        metadata=metadata if metadata is not None else {"seed": seed, "prompt": "p"},
    )


def assert_captures_equal(a: Capture, b: Capture, *, atol: float = 0.0) -> None:
    assert a.layout.to_dict() == b.layout.to_dict()
    assert (a.num_layers, a.num_heads, a.model, a.metadata) == (
        b.num_layers,
        b.num_heads,
        b.model,
        b.metadata,
    )
    assert len(a.passes) == len(b.passes)
    for p, q in zip(a.passes, b.passes, strict=True):
        assert (p.kind, p.layers, p.step, p.time, p.head_reduction) == (
            q.kind,
            q.layers,
            q.step,
            q.time,
            q.head_reduction,
        )
        np.testing.assert_array_equal(p.query_rows, q.query_rows)
        if atol == 0:
            assert p.probs.dtype == q.probs.dtype
            assert p.probs.tobytes() == q.probs.tobytes()
        else:
            np.testing.assert_allclose(p.probs, q.probs, rtol=0, atol=atol)
    if a.actions is None:
        assert b.actions is None
    else:
        assert a.actions.tobytes() == b.actions.tobytes()


@pytest.fixture(name="random_capture")
def _random_capture_fixture():
    return random_capture


@pytest.fixture(name="assert_captures_equal")
def _assert_captures_equal_fixture():
    return assert_captures_equal


@pytest.fixture(name="small_layout")
def _small_layout_fixture():
    return small_layout


@pytest.fixture
def capture() -> Capture:
    return random_capture(0)
