"""Batch-1 frames of the tiny random Pi0 / Pi0.5 models for the causal tests."""

from __future__ import annotations

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "model"))
import pi0_testkit as kit  # noqa: E402

from flowlens.model import Observation  # noqa: E402

STEPS = 3


def frame(name: str, seed: int, element: int = 0) -> Observation:
    """Batch element ``element`` of ``kit.observation(name, seed=seed)`` as a batch-1 Observation
    (element 0: right wrist masked, 7 prompt tokens; element 1: all cameras, 4 tokens)."""
    o = kit.observation(name, batch=2, seed=seed)
    s = slice(element, element + 1)
    return Observation(images={c: v[s] for c, v in o.images.items()},
                       image_masks={c: np.asarray(v)[s] for c, v in o.image_masks.items()},
                       state=o.state[s], tokenized_prompt=o.tokenized_prompt[s],
                       tokenized_prompt_mask=o.tokenized_prompt_mask[s])


def noise(name: str, frames: int) -> np.ndarray:
    return kit.noise(name, batch=frames)
