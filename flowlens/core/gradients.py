"""Gradients of a scalar action target, as data: what the gradient attribution methods consume.

The model side (:mod:`flowlens.model.gradients`) differentiates a scalar target of the sampled
action chunk (one action dimension of one action step, a heading projection, the velocity at a
denoising step) through the real sampler with ``jax.vjp``. Two records come out, both plain
numpy and free of JAX:

* :class:`AttentionGradients` — the Capture of that inference (every layer, head, row and step)
  and, aligned pass by pass with ``capture.passes``, ∂target/∂A for every attention map
  (float32 [layer, head, query, key], the same shape as the pass's probabilities). The prefix
  pass's gradient sums the contributions of every denoising step (its keys and values are read by
  all of them through the KV cache).
* :class:`PathGradients` — ∂target/∂(prefix embeddings) at points ``x' + α (x − x')`` on the
  straight path from a baseline to the real image-patch and prompt embeddings, with the target's
  values there (Integrated Gradients integrates them).

    >>> import numpy as np
    >>> from flowlens.testing import synthetic_capture
    >>> cap = synthetic_capture("toy", num_layers=2, num_heads=2, num_steps=1)
    >>> grads = tuple(np.zeros_like(p.probs) for p in cap.passes)
    >>> AttentionGradients(cap, grads, target=0.5, target_name="a[0, 0]").gradient_of(cap.prefix).shape[:2]
    (2, 2)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from flowlens.core.capture import AttentionPass, Capture
from flowlens.core.checks import check_type, real_array
from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError


@dataclasses.dataclass(frozen=True, eq=False)
class AttentionGradients:
    """∂target/∂A for every attention map of one inference.

    Attributes:
      capture: the inference's Capture (all heads, every valid row of each pass recorded).
      gradients: one float32 array per entry of ``capture.passes``, shaped like its ``probs``
        ([layer, head, query, key]).
      target: the target's value (float).
      target_name: what the target is, e.g. "heading·(0.6, 0.8) of actions 0..4".
    """

    capture: Capture
    gradients: tuple[np.ndarray, ...]
    target: float
    target_name: str = "target"

    def __post_init__(self) -> None:
        check_type("capture", self.capture, Capture)
        grads = tuple(real_array(f"gradients[{i}]", g, kinds="f").astype(np.float32, copy=False)
                      for i, g in enumerate(self.gradients))
        if len(grads) != len(self.capture.passes):
            raise FlowlensError(
                f"gradients must hold one array per capture pass ({len(self.capture.passes)}), got {len(grads)}.")
        for i, (g, p) in enumerate(zip(grads, self.capture.passes, strict=True)):
            if g.shape != p.probs.shape:
                raise FlowlensError(
                    f"gradients[{i}] must have the shape of its pass's probs {p.probs.shape}, got {g.shape}.")
            if p.head_reduction is not None:
                raise FlowlensError(
                    f"the {p.kind.value} pass stored only the {p.head_reduction!r} of its heads; gradient "
                    "methods need every head (record with heads=None).")
        object.__setattr__(self, "gradients", grads)

    def gradient_of(self, attention_pass: AttentionPass) -> np.ndarray:
        """The gradient array of one of ``capture.passes`` (matched by identity)."""
        for p, g in zip(self.capture.passes, self.gradients, strict=True):
            if p is attention_pass:
                return g
        raise FlowlensError("attention_pass is not one of this record's capture.passes.")


@dataclasses.dataclass(frozen=True, eq=False)
class PathGradients:
    """Target gradients along the straight path from a baseline to the prefix embeddings.

    Attributes:
      layout: token layout (the prefix is tokens ``0 .. P-1``).
      inputs: float [P, D] the real prefix embeddings x (image patch tokens, then prompt tokens).
      baseline: float [P, D] the baseline x'.
      alphas: float [m] path positions in [0, 1], ascending, first 0 and last 1.
      gradients: float [m, P, D] ∂target/∂x at ``x' + α (x − x')``.
      values: float [m] the target there (``values[0]`` = F(x'), ``values[-1]`` = F(x)).
      target_name: what the target is.
    """

    layout: TokenLayout
    inputs: np.ndarray
    baseline: np.ndarray
    alphas: np.ndarray
    gradients: np.ndarray
    values: np.ndarray
    target_name: str = "target"

    def __post_init__(self) -> None:
        check_type("layout", self.layout, TokenLayout)
        x = real_array("inputs", self.inputs, ndim=2, kinds="f")
        base = real_array("baseline", self.baseline, ndim=2, kinds="f")
        a = real_array("alphas", self.alphas, ndim=1, kinds="f")
        g = real_array("gradients", self.gradients, ndim=3, kinds="f")
        v = real_array("values", self.values, ndim=1, kinds="f")
        m = a.size
        if base.shape != x.shape or g.shape != (m,) + x.shape or v.size != m:
            raise FlowlensError(
                f"PathGradients shapes disagree: inputs {x.shape}, baseline {base.shape}, alphas ({m},), "
                f"gradients {g.shape} (expected {(m,) + x.shape}), values {v.shape}.")
        if m < 2 or a[0] != 0.0 or a[-1] != 1.0 or np.any(np.diff(a) <= 0):
            raise FlowlensError(
                f"alphas must ascend from 0 to 1 with at least 2 points, got {a[:3].tolist()}…{a[-2:].tolist()}.")
        if x.shape[0] != self.layout.prefix_len:
            raise FlowlensError(
                f"inputs has {x.shape[0]} rows but the layout's prefix has {self.layout.prefix_len} tokens.")
