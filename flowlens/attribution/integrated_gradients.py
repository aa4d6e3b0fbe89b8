"""Integrated Gradients (Sundararajan, Taly & Yan, ICML 2017) on the prefix embeddings.

For inputs x (the image-patch tokens and the prompt-token embeddings Pi0's PaliGemma expert
reads), a baseline x' and a scalar action target F, the attribution of embedding entry i is
``(x_i − x'_i) · ∫₀¹ ∂F/∂x_i (x' + α (x − x')) dα``. flowlens integrates with the trapezoid rule
on the path points of a :class:`flowlens.core.gradients.PathGradients` (both ends included,
error O(1/m²) for a smooth F), sums each token's entries into one token score, and checks
*completeness*: the attributions sum to ``F(x) − F(x')`` (the axiom; the gap measures the
quadrature error). A zero baseline sits on RMSNorm's singularity (every layer's input norm is 0
there, so F jumps within α ≈ 1e-3 of it and no uniform grid integrates it); the default path
baseline of :func:`flowlens.model.gradients.path_gradients` is the mean valid prefix embedding.

    >>> import numpy as np
    >>> from flowlens.core.gradients import PathGradients
    >>> from flowlens.testing import toy_layout
    >>> lay = toy_layout()
    >>> x = np.ones((lay.prefix_len, 1)); a = np.linspace(0, 1, 3)
    >>> g = a[:, None, None] * 2 * x[None]                            # F = Σ x², ∂F/∂x = 2x at α x
    >>> valid = int(lay.valid[: lay.prefix_len].sum())               # padding tokens do not count
    >>> ig = integrated_gradients(PathGradients(lay, x, 0 * x, a, g, valid * a**2))
    >>> valid, ig.total, ig.expected, float(ig.token_scores[0])
    (10, 10.0, 10.0, 1.0)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from flowlens.core.gradients import PathGradients
from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError

NEEDS_PATH = (
    "integrated_gradients needs the target's gradients along the path from a baseline to the prefix "
    "embeddings, got {got}. Compute them with flowlens.model.gradients.path_gradients(model, params, obs, "
    "ActionTarget(...), noise=..., steps=32) and pass the PathGradients it returns."
)


@dataclasses.dataclass(frozen=True, eq=False)
class IntegratedGradients:
    """IG attributions of the prefix embeddings.

    Attributes:
      layout: the token layout.
      attributions: float64 [P, D] per embedding entry.
      token_scores: float64 [token] over the layout: the sum of a prefix token's entries (signed);
        NaN on padding / masked tokens and on the suffix.
      total: the sum of all attributions.
      expected: F(x) − F(x') (completeness says total equals it).
      steps: path intervals used.
      target_name: the target.
    """

    layout: TokenLayout
    attributions: np.ndarray
    token_scores: np.ndarray
    total: float
    expected: float
    steps: int
    target_name: str

    @property
    def completeness_error(self) -> float:
        """|total − expected| / |expected| (absolute when expected is 0)."""
        gap = abs(self.total - self.expected)
        return gap / abs(self.expected) if self.expected != 0 else gap


def integrated_gradients(path: PathGradients) -> IntegratedGradients:
    """Integrate ``path`` (trapezoid rule over its alphas) into IG attributions and token scores."""
    if not isinstance(path, PathGradients):
        raise FlowlensError(NEEDS_PATH.format(got=type(path).__name__))
    g = np.asarray(path.gradients, np.float64)
    a = np.asarray(path.alphas, np.float64)
    mean_grad = np.tensordot(np.diff(a), (g[1:] + g[:-1]) / 2, axes=(0, 0))  # ∫₀¹ ∂F/∂x dα  [P, D]
    attributions = (np.asarray(path.inputs, np.float64) - np.asarray(path.baseline, np.float64)) * mean_grad
    layout = path.layout
    p = layout.prefix_len
    scores = np.full(layout.n, np.nan)
    valid = layout.valid[:p]
    scores[:p][valid] = attributions.sum(axis=1)[valid]
    values = np.asarray(path.values, np.float64)
    return IntegratedGradients(layout=layout, attributions=attributions, token_scores=scores,
                               total=float(attributions[valid].sum()), expected=float(values[-1] - values[0]),
                               steps=a.size - 1, target_name=path.target_name)
