"""Fixtures for the figure tests: Agg backend, figures closed after each test, synthetic data.

Scores come from ``flowlens.testing.synthetic_capture`` (the exact Pi0 LIBERO layout, with the
base camera stored as a 256×320 frame rotated 180° before letterboxing, so every overlay goes
through the real frame transform).
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from flowlens import TokenGraph, rollout  # noqa: E402
from flowlens.core.frame import FrameTransform  # noqa: E402
from flowlens.core.openpi_layout import pi0_layout  # noqa: E402
from flowlens.testing import synthetic_capture  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A tabletop-looking uint8 [H, W, 3] frame: gradient table, a dark bowl, a plate, a red cube."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.zeros((height, width, 3))
    img[..., 0] = 0.55 + 0.2 * yy / height
    img[..., 1] = 0.5 + 0.1 * xx / width
    img[..., 2] = 0.45
    for cy, cx, r, col in [
        (0.6, 0.3, 0.12, (0.1, 0.1, 0.1)),
        (0.55, 0.7, 0.15, (0.9, 0.9, 0.85)),
        (0.3, 0.5, 0.08, (0.8, 0.2, 0.2)),
    ]:
        img[(yy - cy * height) ** 2 + (xx - cx * width) ** 2 < (r * min(height, width)) ** 2] = col
    img += rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


class Data:
    """Synthetic Pi0 scores of the action tokens (mean over the 50 action queries)."""

    def __init__(self):
        tfs = [FrameTransform((256, 320), (224, 224), True), FrameTransform(), FrameTransform()]
        self.layout = pi0_layout(transforms=tfs)
        self.capture = synthetic_capture("pi0", layout=self.layout, num_heads=2, num_steps=3)
        p, act = self.layout.prefix_len, self.layout.actions
        rows = slice(act.start - p, act.stop - p)
        # raw: [step, layer, head, token]
        self.raw_steps = np.stack([s.probs[:, :, rows].mean(axis=2) for s in self.capture.steps]).astype(
            np.float64
        )
        self.raw = self.raw_steps[0]  # [layer, head, token]
        r = rollout(TokenGraph.from_capture(self.capture, 0))
        self.rollout = np.stack([r.token_scores(layer) for layer in r.layers])  # [layer, token]
        # action→action block, step 0, head mean: [layer, horizon, horizon]
        self.actions = self.capture.step(0).probs.mean(axis=1)[:, rows, act.start : act.stop]
        self.images = {"base_0_rgb": scene(256, 320), "left_wrist_0_rgb": scene(224, 224, 1)}


@pytest.fixture(scope="session")
def data():
    return Data()
