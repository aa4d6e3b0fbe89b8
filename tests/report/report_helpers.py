"""Builders for the report tests: small synthetic Pi0-layout frames with raw / rollout / flow scores."""

import numpy as np

from flowlens.core.frame import FrameTransform
from flowlens.core.openpi_layout import pi0_layout
from flowlens.report import ReportFrame, with_head_mean


def scene(height, width, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 200, size=(height, width, 3), dtype=np.uint8)
    img[height // 3 : height // 2, width // 4 : width // 2] = (20, 20, 20)
    return img


def make_frames(
    prompt="pick up the black bowl and place it on the plate", count=2, steps=2, layers=4, heads=2, seed=0
):
    """Frames whose scores are random but structured per (step, layer, head), so every slider matters."""
    tfs = [
        FrameTransform((96, 120), (224, 224), True),
        FrameTransform((64, 64), (224, 224), False),
        FrameTransform(),
    ]
    layout = pi0_layout(prompt, transforms=tfs)
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        per_head = rng.random((steps, layers, heads, layout.n)).astype(np.float32) ** 4
        per_head /= per_head.sum(axis=-1, keepdims=True)
        per_head[..., ~layout.valid] = np.nan
        roll = per_head.mean(axis=2, keepdims=True) * 0.5 + 0.5 / layout.n
        frames.append(
            ReportFrame(
                layout=layout,
                scores={"raw": with_head_mean(per_head), "rollout": roll, "flow": roll[:, -1:]},
                images={"base_0_rgb": scene(96, 120, i), "left_wrist_0_rgb": scene(64, 64, i + 7)},
                label=f"frame {10 * i}",
            )
        )
    return frames
