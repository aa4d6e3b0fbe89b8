"""Gradient-weighted relevancy (Chefer, Gur & Wolf, ICCV 2021), self-attention rules.

Per layer l the head-averaged, positively clipped, gradient-weighted attention is
``Ā_l = E_h[(∇A_l ⊙ A_l)⁺]`` (∇A: the gradient of a scalar action target with respect to the
attention probabilities). Relevancy starts as the identity and accumulates ``R ← R + Ā_l · R``
from the first layer to the last; row q of the final R is the relevance of every input token for
token q. Pi0's sampler is one joint self-attention per denoising step (prefix rows from the
prefix pass, action rows from that step's suffix pass, stitched exactly as a TokenGraph), so the
self-attention rules suffice. flowlens computes only the query rows, right to left as row vectors
(``e_q (I + Ā_{L-1}) ⋯ (I + Ā_0)``: O(L·q·n²), no n×n products). The relevance of a chunk sums
the action rows over the denoising steps asked for (each step's gradients already weigh how much
that step's attention moved the target).

    >>> import numpy as np
    >>> A = np.array([[[1.0, 0.0], [0.5, 0.5]]])[:, None]        # 1 layer, 1 head, 2 tokens
    >>> G = np.array([[[0.0, 0.0], [2.0, -1.0]]])[:, None]       # ∂y/∂A
    >>> relevancy_rows(A, G, query=[1])[0]                       # e_1 (I + (G ⊙ A)⁺)
    array([1., 1.])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from flowlens.core.capture import PassKind
from flowlens.core.checks import real_array
from flowlens.core.gradients import AttentionGradients
from flowlens.core.layout import TokenLayout
from flowlens.core.query import select_query
from flowlens.errors import FlowlensError

NEEDS_GRADIENTS = (
    "{method} needs the gradients of an action target with respect to every attention map, got {got}. "
    "Compute them with flowlens.model.gradients.attention_gradients(model, params, obs, ActionTarget(...), "
    "noise=...) and pass the AttentionGradients it returns."
)


def require_gradients(value, method: str) -> AttentionGradients:
    """``value`` if it is an AttentionGradients, else a FlowlensError saying the method needs one."""
    if not isinstance(value, AttentionGradients):
        raise FlowlensError(NEEDS_GRADIENTS.format(method=method, got=type(value).__name__))
    return value


def weighted_attention(probs: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Chefer's Ā = mean over heads of (∇A ⊙ A)⁺: [layer, head, q, k] × 2 → float64 [layer, q, k]."""
    prod = np.asarray(grads, np.float64) * np.asarray(probs, np.float64)
    return np.clip(prod, 0.0, None).mean(axis=1)


def relevancy_rows(attention: np.ndarray, gradients: np.ndarray, query: Sequence[int] | np.ndarray) -> np.ndarray:
    """Rows ``query`` of ``R = (I + Ā_{L-1}) ⋯ (I + Ā_0)`` from one joint pass.

    Args:
      attention: float [layer, head, n, n] probabilities A.
      gradients: float [layer, head, n, n] ∂y/∂A.
      query: int [q] rows.
    Returns:
      float64 [q, n].
    """
    a = real_array("attention", attention, ndim=4, kinds="f", shape_hint="[layer, head, n, n]")
    g = real_array("gradients", gradients, ndim=4, kinds="f", shape_hint="[layer, head, n, n]")
    if a.shape != g.shape or a.shape[-1] != a.shape[-2]:
        raise FlowlensError(f"attention {a.shape} and gradients {g.shape} must both be [layer, head, n, n].")
    return _rows(weighted_attention(a, g), np.asarray(query, np.int64))


def _rows(abar: np.ndarray, query: np.ndarray) -> np.ndarray:
    n = abar.shape[-1]
    v = np.zeros((query.size, n))
    v[np.arange(query.size), query] = 1.0
    for layer in range(abar.shape[0] - 1, -1, -1):  # e_q (I + Ā_{L-1}) ... (I + Ā_0)
        v = v + v @ abar[layer]
    return v


def stitched_weighted_attention(gradients: AttentionGradients, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Ā over the valid tokens of denoising ``step``: (nodes int [m], float64 [layer, m, m]).

    Prefix rows come from the prefix pass, suffix rows from that step's pass (as
    ``TokenGraph.from_capture`` stitches attention); padding and masked cameras are dropped.
    """
    cap = gradients.capture
    layout = cap.layout
    parts = [cap.prefix, cap.step(step)] if cap.steps else [cap.full]
    if parts[0] is None:
        raise FlowlensError("the gradients' capture has no prefix pass; record it to stitch the graph.")
    valid = layout.valid
    nodes = np.flatnonzero(valid)
    pos_of = np.full(layout.n, -1)
    pos_of[nodes] = np.arange(nodes.size)
    layers = parts[0].layers
    out = np.zeros((len(layers), nodes.size, nodes.size))
    for p in parts:
        if p.layers != layers:
            raise FlowlensError(f"every pass must hold the same layers, got {p.layers} and {layers}.")
        abar = weighted_attention(p.probs, gradients.gradient_of(p))
        rows = np.flatnonzero(valid[p.query_rows])
        keys = np.flatnonzero(valid[: p.key_count])
        out[:, pos_of[p.query_rows[rows]][:, None], pos_of[keys][None, :]] = abar[:, rows][:, :, keys]
    return nodes, out


@dataclasses.dataclass(frozen=True, eq=False)
class Relevancy:
    """Chefer relevancy of some query tokens.

    Attributes:
      layout: the token layout.
      nodes: int64 [node] layout token of each node (valid tokens).
      query_tokens: int64 [query] layout tokens of the queries.
      values: float64 [step, query, node]: row q of R for each denoising step used.
      steps: the denoising steps (None for a full pass).
      target_name: the action target the gradients are of.
    """

    layout: TokenLayout
    nodes: np.ndarray
    query_tokens: np.ndarray
    values: np.ndarray
    steps: tuple[int | None, ...]
    target_name: str

    def token_scores(self, *, reduce: str = "sum") -> np.ndarray:
        """float64 [token]: summed over steps, queries reduced by "sum" / "mean" / "max" (NaN off the nodes)."""
        if reduce not in ("sum", "mean", "max"):
            raise FlowlensError(f"reduce={reduce!r} is not known; expected one of ['sum', 'mean', 'max'].")
        vals = getattr(np, reduce)(self.values.sum(axis=0), axis=0)
        out = np.full(self.layout.n, np.nan)
        out[self.nodes] = vals
        return out


def chefer_relevancy(gradients: AttentionGradients, query: str | Sequence[int] | np.ndarray | None = None, *,
                     steps: str | Sequence[int] = "all", **select) -> Relevancy:
    """Gradient-weighted relevancy of the query tokens (default: every action token).

    Args:
      gradients: an AttentionGradients (``flowlens.model.gradients.attention_gradients``); a plain
        Capture has no gradients and is refused with the fix.
      query: a query name ("actions", "action:0", ...), token indices, or ``layout.select``
        keywords in ``select``.
      steps: "all" or denoising step indices whose relevance is summed.
    Returns:
      Relevancy with values [step, query, node].
    """
    gradients = require_gradients(gradients, "chefer_relevancy")
    cap = gradients.capture
    layout = cap.layout
    query_tokens = np.asarray(select_query(layout, query, **select), np.int64)
    if cap.steps:
        if isinstance(steps, str):
            if steps != "all":
                raise FlowlensError(f"steps={steps!r} is not known; expected 'all' or denoising step ids.")
            ids = cap.step_ids
        else:
            ids = tuple(cap.step(int(s)).step for s in steps)
    elif cap.full is not None and cap.full.kind == PassKind.FULL:
        ids = (None,)
    else:
        raise FlowlensError("the gradients' capture holds no denoising step and no full pass.")
    values = []
    nodes = None
    for s in ids:
        nodes, abar = stitched_weighted_attention(gradients, s)
        pos_of = np.full(layout.n, -1)
        pos_of[nodes] = np.arange(nodes.size)
        q = pos_of[query_tokens]
        if np.any(q < 0):
            raise FlowlensError(f"query tokens {query_tokens[q < 0].tolist()} are padding or masked: not in the graph.")
        values.append(_rows(abar, q))
    return Relevancy(layout=layout, nodes=nodes, query_tokens=query_tokens, values=np.stack(values),
                     steps=tuple(ids), target_name=gradients.target_name)
