"""Edge capacities of the attention-flow graph: head fusion, valid-token masking, residual.

Concept: layer l of the attention graph is the row-stochastic matrix
``Â_l = rownorm((1 - r)·A_l + r·I)`` of Abnar & Zuidema (2020), where ``A_l`` is the head-fused
attention of layer l (mean over heads by default; max, min or one head on request) and ``r`` the
residual weight (0.5 in the paper). ``Â_l[f, t]`` is the capacity of the edge from token f at node
layer l+1 down to token t at node layer l. Invalid tokens (padding, masked) are removed as rows
*and* columns before the residual is added, so the remaining rows are renormalised over valid keys.

All outputs are float64: max-flow values are sums of many small capacities, and float32 rounding
would exceed the 1e-6 exactness the solver guarantees.
"""

from __future__ import annotations

import numpy as np

from flowlens.core.graph import HEAD_FUSIONS, fuse_heads
from flowlens.errors import FlowlensError, unknown_name_error

__all__ = ["flow_capacities", "fuse_heads", "prune_capacities", "residual_capacities"]

FLOW_FUSIONS = HEAD_FUSIONS[:-1]  # "mean", "max", "min": flow needs one fused layer ("keep" is not one)


def _flow_fused(attention: np.ndarray, heads: str | int) -> np.ndarray:
    """``fuse_heads`` of ``[layer, head, query, key]`` attention, checked with flow's argument name.

    Accumulates in the input's float precision (float32 attention fuses exactly as TokenGraph
    fuses it), then widens to float64 for the capacities.
    """
    if isinstance(heads, (int, np.integer)) and not isinstance(heads, bool):
        h = attention.shape[1]
        if not -h <= int(heads) < h:
            raise FlowlensError(
                f"heads={int(heads)} is out of range: attention has {h} heads "
                f"(0–{h - 1}); pass a valid head index or 'mean'."
            )
    elif heads not in FLOW_FUSIONS:
        raise unknown_name_error("heads", str(heads), FLOW_FUSIONS)
    accumulate = np.result_type(attention.dtype, np.float32)
    return fuse_heads(attention, heads, axis=1, dtype=accumulate).astype(np.float64, copy=False)


def residual_capacities(fused: np.ndarray, residual: float | None = 0.5, *,
                        renormalize: bool | None = None) -> np.ndarray:
    """Residual-augmented, row-normalised layer matrices ``rownorm((1 - r)·A + r·I)``.

    Args:
      fused: float [layer, n, n] head-fused attention over valid tokens.
      residual: r in [0, 1]; None or 0 adds no identity.
      renormalize: divide each row by its sum (all-zero rows stay zero). Default: True when a residual
        is added, False otherwise (raw attention rows already sum to 1 over all keys).

    Returns:
      float64 [layer, n, n] capacities, ``out[l, f, t]`` = capacity of (l+1, f) → (l, t).
    """
    r = 0.0 if residual is None else float(residual)
    if renormalize is None:
        renormalize = r > 0.0
    out = np.array(fused, dtype=np.float64, copy=True)
    if r > 0.0:
        out *= 1.0 - r
        idx = np.arange(out.shape[-1])
        out[:, idx, idx] += r
    if renormalize:
        sums = out.sum(axis=-1, keepdims=True)
        np.divide(out, sums, out=out, where=sums > 0)
    return out


def flow_capacities(attention: np.ndarray, *, heads: str | int = "mean",
                    residual: float | None = 0.5, valid: np.ndarray | None = None,
                    renormalize: bool | None = None, fused: bool = False) -> np.ndarray:
    """Capacities ``[layer, m, m]`` of the attention-flow graph over the m valid tokens.

    Args:
      attention: float [layer, head, n, n], or [layer, n, n] when ``fused`` is True.
      heads: "mean" | "max" | "min" or a head index (see ``flowlens.core.graph.fuse_heads``;
        ignored when ``fused``).
      residual: r of ``rownorm((1 - r)·A + r·I)``; None/0 for none.
      valid: bool [n] or None; invalid tokens are dropped as rows and columns.
      renormalize: see :func:`residual_capacities`.
      fused: the input has no head axis.

    Returns:
      float64 [layer, m, m] with m = number of valid tokens (n when ``valid`` is None).
    """
    a = attention if fused else _flow_fused(np.asarray(attention), heads)
    if valid is not None:
        keep = np.flatnonzero(valid)
        if keep.size != a.shape[-1]:
            a = a[:, keep][:, :, keep]
    return residual_capacities(a, residual, renormalize=renormalize)


def prune_capacities(C: np.ndarray, prune: float) -> np.ndarray:
    """Zero capacities below ``prune / m`` (relative to the uniform weight 1/m of m tokens).

    Args:
      C: float64 [layer, m, m] capacities.
      prune: relative threshold; 0.1 drops edges carrying under a tenth of a uniform row's weight.

    Returns:
      float64 [layer, m, m], a pruned copy (capacities only decrease, so flows become lower bounds).
    """
    thr = float(prune) / C.shape[-1]
    return np.where(C >= thr, C, 0.0)
