"""Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020).

Per layer the residual-augmented, row-renormalised attention is ``T_l = rownorm((1 - r)·A_l + r·I)``
(r = 0.5 in the paper). The rollout after layer l is ``J_l = T_l · T_{l-1} ⋯ T_0``; row q of J_l
says how much of token q's layer-l representation traces back to each input token.

flowlens computes only the rows asked for. The product is evaluated right-to-left as row vectors,
``e_q T_l T_{l-1} ⋯ T_0``, with the renormalisation folded into the chain — with
``d = (1 - r)·rowsum(A) + r``, ``v·T = ((1 - r)·(v/d))·A + r·(v/d)`` — so each layer costs one
skinny GEMM and no ``n × n`` temporaries (O(L·q·n²) instead of O(L·n³)). The products run in
float32 by default with the row normalisers summed in float64 (``precision="float64"`` for
all-double). For the rollout after *every* layer, the chains of all layers run together top-down
(the chain of J_l starts at layer l), costing L(L+1)/2 skinny products; when that exceeds the
full products (q·(L+1)/2 > n) flowlens switches to the full forward recursion (float64).

    >>> import numpy as np
    >>> A = np.array([[[1.0, 0.0], [0.5, 0.5]]])            # 1 layer, 2 tokens
    >>> attention_rollout(A[:, None], query=[1])[0]          # 0.5·A + 0.5·I, row 1
    array([[0.25, 0.75]])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from flowlens.core.capture import check_probabilities
from flowlens.core.checks import check_choice, check_flag, check_residual, check_type, index_array, real_array
from flowlens.core.graph import TokenGraph, check_heads, fuse_heads
from flowlens.core.query import select_query
from flowlens.errors import FlowlensError, check_index, unknown_name_error


def _fold(a: np.ndarray, r: float, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """(1 - r)·A in ``dtype`` and the row normalisers d = (1 - r)·rowsum(A) + r (summed in float64)."""
    d = (1.0 - r) * a.sum(axis=1, dtype=np.float64) + r
    d[d <= 0] = 1.0
    scaled = a.astype(dtype, copy=True)
    if r:
        scaled *= dtype(1.0 - r)
    return scaled, d.astype(dtype)


def _apply(v: np.ndarray, a_scaled: np.ndarray, d: np.ndarray, r: float) -> np.ndarray:
    """Row vectors v [..., n] times rownorm((1 - r)A + rI), given (1 - r)A and d."""
    w = v / d
    out = w @ a_scaled
    if r:
        out += w * out.dtype.type(r)
    return out


def rollout_rows(attention: np.ndarray, query: np.ndarray, *, residual: float = 0.5,
                 all_layers: bool = True, precision: str = "float32") -> np.ndarray:
    """Core kernel on fused attention.

    Args:
      attention: [layer, node, node] fused attention (rows need not be normalised).
      query: int [query] node positions of the query rows.
      residual: r in [0, 1].
      all_layers: return the rollout after every layer (else only after the last).
      precision: dtype of the chain's matrix products, "float32" (default; row normalisers are
        always summed in float64; measured error vs a float64 oracle ≈ 1e-9 at Pi0 scale) or
        "float64".
    Returns:
      float64 [layer, query, node] (or [1, query, node]).
    """
    if precision not in ("float32", "float64"):
        raise unknown_name_error("precision", precision, ("float32", "float64"))
    dt = np.dtype(precision).type
    num_layers, n, _ = attention.shape
    q = len(query)
    rows = np.asarray(query, dtype=np.int64)
    if not all_layers:
        v = np.zeros((q, n), dtype=dt)
        v[np.arange(q), rows] = 1.0
        for layer in reversed(range(num_layers)):
            v = _apply(v, *_fold(attention[layer], residual, dt), residual)
        return v[None].astype(np.float64)
    if q * (num_layers + 1) / 2 > n:  # full products are cheaper
        j = None
        out = np.empty((num_layers, q, n))
        for layer in range(num_layers):
            a, d = _fold(attention[layer], residual, np.float64)
            t = a / d[:, None]
            t[np.arange(n), np.arange(n)] += residual / d
            j = t if j is None else t @ j
            out[layer] = j[rows]
        return out
    # Top-down multi-chain: chains[k] holds e_q T_k ... T_layer for every started chain k >= layer.
    start = np.zeros((q, n), dtype=dt)
    start[np.arange(q), rows] = 1.0
    chains = np.empty((0, q, n), dtype=dt)
    for layer in reversed(range(num_layers)):
        chains = np.concatenate([start[None], chains], axis=0)
        a, d = _fold(attention[layer], residual, dt)
        chains = _apply(chains.reshape(-1, n), a, d, residual).reshape(chains.shape)
    return chains.astype(np.float64)


@dataclasses.dataclass(frozen=True, eq=False)
class Rollout:
    """Rollout of some query tokens through a TokenGraph.

    Attributes:
      graph: the graph it was computed on.
      query_nodes: int [query] node positions of the queries.
      values: float64 [layer, query, node]; values[i] is the rollout after graph layer i
        (model layer ``layers[i]``), or only the last layer when computed with ``all_layers=False``.
      layers: model layer id of each entry of the layer axis.
    """

    graph: TokenGraph
    query_nodes: np.ndarray
    values: np.ndarray
    layers: tuple[int, ...]

    @property
    def query_tokens(self) -> np.ndarray:
        """int64 [query]: layout token index of each query (as ``FlowResult.query_tokens``)."""
        return self.graph.nodes[self.query_nodes]

    @property
    def final(self) -> np.ndarray:
        """float64 [query, node]: rollout after the last layer (relevance of the inputs)."""
        return self.values[-1]

    def token_scores(self, layer: int = -1, *, reduce: str = "mean") -> np.ndarray:
        """float64 [token] over the layout (NaN at removed tokens), queries reduced by mean/sum/max."""
        pos = check_index("layer", layer, len(self.layers), "rollout layers") if layer < 0 else \
            self.layers.index(layer) if layer in self.layers else None
        if pos is None:
            raise FlowlensError(f"layer {layer} is not in this rollout; it holds layers {list(self.layers)}.")
        if reduce not in ("mean", "sum", "max"):
            raise unknown_name_error("reduce", reduce, ("mean", "sum", "max"))
        vals = getattr(np, reduce)(self.values[pos], axis=0)
        return self.graph.to_tokens(vals)


def rollout(graph: TokenGraph, query: str | Sequence[int] | np.ndarray | None = None, *,
            all_layers: bool = True, precision: str = "float32", **select) -> Rollout:
    """Rollout of a TokenGraph for chosen query tokens.

    Args:
      graph: a TokenGraph (heads fused; "keep" graphs are rolled out per head via ``graph.fused``).
      query: layout token indices of the queries, or a query name ("action:0", "actions", "last",
        "state"; see ``flowlens.core.query``); or give selection criteria as keywords
        (``kind="action"``, ``horizon=0``, ``group="actions"`` ...). Default: all action tokens.
      all_layers: compute the rollout after every layer (default) or only after the last.
      precision: "float32" (default) or "float64" matrix products (see ``rollout_rows``).
    Returns:
      Rollout with values [layer, query, node].
    """
    check_type("graph", graph, TokenGraph, "Build one with TokenGraph.from_capture(capture).")
    all_layers = check_flag("all_layers", all_layers)
    check_choice("precision", precision, ("float32", "float64"))
    if graph.keeps_heads:
        raise FlowlensError("rollout needs fused heads; build the graph with heads='mean' (or call graph.fused()).")
    nodes = graph.node_index(select_query(graph.layout, query, **select))
    values = rollout_rows(graph.attention, nodes, residual=graph.residual, all_layers=all_layers,
                          precision=precision)
    layers = graph.layers if all_layers else graph.layers[-1:]
    return Rollout(graph=graph, query_nodes=nodes, values=values, layers=layers)


def attention_rollout(
    attention: np.ndarray,
    *,
    heads: str | int | Sequence[int] = "mean",
    residual: float | None = 0.5,
    query: int | Sequence[int] | np.ndarray | None = None,
    all_layers: bool = True,
    valid: np.ndarray | None = None,
    precision: str = "float32",
) -> np.ndarray:
    """Array-level rollout for people who bring their own attention.

    Args:
      attention: [layer, head, query, key] probabilities with query == key (a joint pass).
      heads: "mean" | "max" | "min" | a head index | a list of head indices.
      residual: r of ``rownorm((1 - r)·A + r·I)``; 0.5 as Abnar & Zuidema; None or 0 for none.
      query: token indices (ints; negative count from the end) of the rows to compute, or a bool
        mask [token] (default: all rows). Floats (1.7, even 1.0) are refused. Query names
        ("actions" ...) need a layout: use ``rollout(TokenGraph.from_attention(layout, attention), "actions")``.
      all_layers: rollout after every layer (default) or only after the last.
      valid: optional bool [token]; invalid tokens' rows and columns are removed first (their
        output columns are 0). Query rows must be valid.
      precision: "float32" (default) or "float64" matrix products (see ``rollout_rows``).
    Returns:
      float64 [layer, query_row, key] (layer axis of size 1 when ``all_layers=False``).
    Raises:
      FlowlensError: naming the argument: attention that is not a real numeric 4-D array with
        query == key and no empty axis, or not finite probabilities; unknown heads; residual not a
        number in [0, 1]; query rows that are not ints / a bool mask [token], out of range or invalid.
    """
    attention = real_array("attention", attention, shape_hint="[layer, head, query, key]")
    if attention.ndim != 4 or attention.shape[2] != attention.shape[3]:
        raise FlowlensError(
            f"attention must be [layer, head, query, key] with query == key, got shape {attention.shape}. "
            "For cached passes (prefix + suffix), build a Capture and use TokenGraph.from_capture."
        )
    heads = check_heads(heads)
    r = check_residual(residual) or 0.0
    all_layers = check_flag("all_layers", all_layers)
    check_choice("precision", precision, ("float32", "float64"))
    n = attention.shape[-1]
    keep = np.ones(n, dtype=bool) if valid is None else real_array("valid", valid, kinds="biu").astype(bool)
    if keep.shape != (n,):
        raise FlowlensError(f"valid must be bool [{n}] (one flag per token), got shape {keep.shape}.")
    check_probabilities(attention, "attention", valid_rows=keep)
    if isinstance(query, str):
        raise FlowlensError(
            f"query={query!r} is a query name, but attention_rollout has no token layout to resolve it; "
            "pass token indices, or use rollout(TokenGraph.from_attention(layout, attention), query)."
        )
    rows = np.arange(n) if query is None else index_array("query", query, size=n)
    bad = rows[(rows < -n) | (rows >= n)]
    if bad.size:
        raise FlowlensError(f"query row {int(bad[0])} out of range: attention has {n} tokens (0–{n - 1}).")
    rows = rows % n
    if not keep[rows].all():
        raise FlowlensError(f"query row {int(rows[~keep[rows]][0])} is marked invalid in valid=...; drop it.")
    fused = fuse_heads(attention.astype(np.float32, copy=False), heads, axis=1)
    idx = np.flatnonzero(keep)
    if idx.size != n:
        fused = fused[:, idx[:, None], idx[None, :]]
    pos = np.searchsorted(idx, rows)
    vals = rollout_rows(fused, pos, residual=r, all_layers=all_layers, precision=precision)
    if idx.size == n:
        return vals
    out = np.zeros(vals.shape[:2] + (n,))
    out[..., idx] = vals
    return out
