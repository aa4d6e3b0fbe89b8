"""Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020).

Per layer the residual-augmented, row-renormalised attention is ``T_l = rownorm((1 - r)·A_l + r·I)``
(r = 0.5 in the paper). The rollout after layer l is ``J_l = T_l · T_{l-1} ⋯ T_0``; row q of J_l
says how much of token q's layer-l representation traces back to each input token.

flowlens computes only the rows asked for. The product is evaluated right-to-left as row vectors,
``e_q T_l T_{l-1} ⋯ T_0``, with the renormalisation folded into the chain — with
``d = (1 - r)·rowsum(A) + r``, ``v·T = ((1 - r)·(v/d))·A + r·(v/d)`` — so each layer costs one
skinny GEMM and no ``n × n`` temporaries (O(L·q·n²) instead of O(L·n³)). The products run in
float32 by default with the row normalisers summed in float64 (``precision="float64"``: float64
throughout, from the head fusion on; a float32 input is widened, never narrowed first).
``attention_rollout`` validates and fuses the raw attention in one read (``core.onepass``) and
runs its skinny products under one BLAS thread (threads only add contention there); below 256
nodes every layer's transition is built at once — by ``attention_rollout`` straight from the raw
attention in the same one read (``core.onepass.checked_transitions``) — so per-call overhead
stays small (n = 54, 18 layers × 8 heads: ≈ 0.2–0.45 ms, level with ten-line numpy rollouts). For the
rollout after *every* layer, the chains of all layers run together top-down (the chain of J_l
starts at layer l), costing L(L+1)/2 skinny products; when that exceeds the
full products (q·(L+1)/2 > n) flowlens switches to the full forward recursion (float64).

    >>> import numpy as np
    >>> A = np.array([[[1.0, 0.0], [0.5, 0.5]]])            # 1 layer, 2 tokens
    >>> attention_rollout(A[:, None], query=[1])[0]          # 0.5·A + 0.5·I, row 1
    array([[0.25, 0.75]])
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

import numpy as np

from flowlens.core.checks import check_choice, check_flag, check_residual, check_type, index_array, real_array
from flowlens.core.graph import TokenGraph, check_heads
from flowlens.core.onepass import checked_fuse, checked_transitions, streamed_fuse
from flowlens.core.query import select_query
from flowlens.errors import FlowlensError, check_index, unknown_name_error


SKINNY_LIMIT_MIN_NODES = 256  # from this size the skinny products run under one BLAS thread


def _apply(v: np.ndarray, a: np.ndarray, d: np.ndarray, r: float) -> np.ndarray:
    """Row vectors v [..., n] times rownorm((1 - r)A + rI), given A and its normalisers d."""
    w = v / d
    if r:
        out = (w * w.dtype.type(1.0 - r)) @ a
        out += w * w.dtype.type(r)
        return out
    return w @ a


def _normalisers(row_sums: np.ndarray, r: float, dtype) -> np.ndarray:
    """d = (1 - r)·rowsum(A) + r (1 where that is 0) from float64 row sums, in ``dtype``."""
    d = (1.0 - r) * row_sums + r
    d[d <= 0] = 1.0
    return d.astype(dtype)


def _one_blas_thread(n: int):
    """BLAS threads only add contention to skinny products (8× slower on a busy 2-core machine):
    run them under one thread where they are large enough for it to matter (threadpoolctl's
    context costs ≈ 0.5 ms, so small problems skip it)."""
    if n < SKINNY_LIMIT_MIN_NODES:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def rollout_rows(attention: np.ndarray, query: np.ndarray, *, residual: float = 0.5,
                 all_layers: bool = True, precision: str = "float32",
                 row_sums: np.ndarray | None = None, wait=None) -> np.ndarray:
    """Core kernel on fused attention.

    Args:
      attention: [layer, node, node] fused attention (rows need not be normalised), used as is
        when its dtype is ``precision`` (no copy).
      query: int [query] node positions of the query rows.
      residual: r in [0, 1].
      all_layers: return the rollout after every layer (else only after the last).
      precision: dtype of the chain's matrix products, "float32" (default; row normalisers are
        always summed in float64; measured error vs a float64 oracle ≈ 1e-9 at Pi0 scale) or
        "float64" (float64 throughout: a float32 ``attention`` is widened, never narrowed).
      row_sums: float64 [layer, node] row sums of ``attention`` when already known (saves a pass).
      wait: called with each layer before its attention and row sums are read, when they are still
        being filled (``core.onepass.streamed_fuse``; then ``row_sums`` must be given).
    Returns:
      float64 [layer, query, node] (or [1, query, node]).
    """
    if precision not in ("float32", "float64"):
        raise unknown_name_error("precision", precision, ("float32", "float64"))
    dt = np.dtype(precision).type
    num_layers, n, _ = attention.shape
    q = len(query)
    rows = np.asarray(query, dtype=np.int64)
    if row_sums is None:
        row_sums = attention.sum(axis=-1, dtype=np.float64)
    if n < SKINNY_LIMIT_MIN_NODES:  # small: build every transition at once, then only products
        full_t = _transitions(attention, row_sums, residual, np.float64)
        if _forward_pays(q, num_layers, n, all_layers):
            return _forward(full_t, rows)
        return _row_chains(full_t if dt is np.float64 else full_t.astype(dt), rows, all_layers)
    if _forward_pays(q, num_layers, n, all_layers):  # full products are cheaper
        j = None
        out = np.empty((num_layers, q, n))
        for layer in range(num_layers):
            tl = _transitions(attention[layer:layer + 1], row_sums[layer:layer + 1], residual, np.float64)[0]
            j = tl if j is None else tl @ j
            out[layer] = j[rows]
        return out
    # large: no n×n temporaries, the normalisation folded into the row vectors
    def step(v: np.ndarray, layer: int) -> np.ndarray:
        if wait is not None:
            wait(layer)
        return _apply(v, attention[layer].astype(dt, copy=False), _normalisers(row_sums[layer], residual, dt),
                      residual)
    with _one_blas_thread(n):
        start = np.zeros((q, n), dtype=dt)
        start[np.arange(q), rows] = 1.0
        if not all_layers:
            v = start
            for layer in reversed(range(num_layers)):
                v = step(v, layer)
            return v[None].astype(np.float64)
        # Top-down multi-chain: chains[k] holds e_q T_k ... T_layer for every started chain k >= layer.
        chains = np.empty((0, q, n), dtype=dt)
        for layer in reversed(range(num_layers)):
            chains = np.concatenate([start[None], chains], axis=0)
            chains = step(chains.reshape(-1, n), layer).reshape(chains.shape)
        return chains.astype(np.float64)


def apply_columns(u: np.ndarray, attention: np.ndarray, d: np.ndarray, r: float) -> np.ndarray:
    """Column vectors u [node, k] left-multiplied by one layer's ``rownorm((1 - r)A + rI)``:
    ``T·u = ((1 - r)·A·u + r·u) / d`` with ``d`` float64 [node] from ``_normalisers`` (float64 out)."""
    out = (1.0 - r) * (attention @ u) if r != 1.0 else np.zeros_like(u)
    if r:
        out += r * u
    return out / d[:, None]


def rollout_columns(attention: np.ndarray, columns: np.ndarray, *, residual: float = 0.5,
                    row_sums: np.ndarray | None = None) -> np.ndarray:
    """The rollout's mass on chosen key sets, for every row and layer, in float64.

    Row q of ``J_l · C`` is the rollout of q after layer l summed over the keys of each column of
    ``C`` — the same numbers as ``rollout_rows(...)[l] @ C``, but as L column products
    (O(L·n²·k)) instead of the L(L+1)/2 row chains: the kernel for "rollout share" on many
    queries at once (routing tables, path decompositions).

    Args:
      attention: [layer, node, node] fused attention (rows need not be normalised).
      columns: [node, k] weights of the key sets (e.g. bool indicators of k selections).
      residual: r in [0, 1].
      row_sums: float64 [layer, node] row sums of ``attention`` when already known.
    Returns:
      float64 [layer, node, k]: entry [l, q, j] = Σ_key J_l[q, key]·columns[key, j].
    """
    if row_sums is None:
        row_sums = attention.sum(axis=-1, dtype=np.float64)
    u = np.asarray(columns, dtype=np.float64)
    out = np.empty((attention.shape[0],) + u.shape)
    for layer in range(attention.shape[0]):
        u = apply_columns(u, attention[layer].astype(np.float64),
                          _normalisers(row_sums[layer], residual, np.float64), residual)
        out[layer] = u
    return out


def _forward_pays(q: int, num_layers: int, n: int, all_layers: bool) -> bool:
    """Whether the L full n×n products beat the L(L+1)/2 skinny [q, n] chains of every layer."""
    return all_layers and q * (num_layers + 1) / 2 > n


def _forward(t: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """float64 [layer, query, node]: rows of J_l = T_l ⋯ T_0 by the forward recursion from the
    transitions t [layer, node, node] (products in t's dtype)."""
    out = np.empty((t.shape[0], len(rows), t.shape[-1]))
    every = len(rows) == t.shape[-1] and bool((rows == np.arange(len(rows))).all())
    j = t[0]
    for layer in range(t.shape[0]):
        if layer:
            j = t[layer] @ j
        if every:
            out[layer] = j
        else:
            np.take(j, rows, axis=0, out=out[layer])
    return out


def _row_chains(t: np.ndarray, rows: np.ndarray, all_layers: bool) -> np.ndarray:
    """float64 [layer, query, node] (or [1, query, node]): rows ``rows`` of J_l from the transitions
    t [layer, node, node], as row chains e_q T_l ⋯ T_0 in t's dtype (top-down, every layer's chain
    at once when ``all_layers``)."""
    num_layers, n, _ = t.shape
    if not all_layers:
        v = t[-1][rows]
        for layer in range(num_layers - 2, -1, -1):
            v = v @ t[layer]
        return v[None].astype(np.float64)
    q = len(rows)
    chains = np.empty((num_layers, q, n), dtype=t.dtype)  # chains[k] = e_q T_k ⋯ T_layer
    chains[-1] = t[-1][rows]
    for layer in range(num_layers - 2, -1, -1):
        chains[layer + 1:] = (chains[layer + 1:].reshape(-1, n) @ t[layer]).reshape(-1, q, n)
        chains[layer] = t[layer][rows]
    return chains.astype(np.float64)


def _transitions(attention: np.ndarray, row_sums: np.ndarray, r: float, dtype) -> np.ndarray:
    """``dtype`` [layer, n, n]: rownorm((1 - r)·A + r·I) of every layer, from A's float64 row sums."""
    d = _normalisers(row_sums, r, np.float64)[..., None]
    t = ((1.0 - r) / d * attention).astype(dtype)
    n = attention.shape[-1]
    t[:, np.arange(n), np.arange(n)] += (r / d[..., 0]).astype(dtype)
    return t


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
    one_read = (valid is None and isinstance(heads, str) and heads == "mean"
                and attention.dtype in (np.float32, np.float64))  # the numba routes of core.onepass
    forward = _forward_pays(len(rows), attention.shape[0], n, all_layers)
    if one_read and n < SKINNY_LIMIT_MIN_NODES:  # small: one kernel to the transitions
        t = checked_transitions(attention, "attention", residual=r, dtype=np.float64 if forward else precision,
                                sum_dtype=precision)  # as rollout_rows: heads fused in ``precision``
        return _forward(t, rows) if forward else _row_chains(t, rows, all_layers)
    if one_read and not forward:  # large, top-down chains: fuse on a worker thread while they multiply
        with streamed_fuse(attention, "attention", dtype=precision) as (fused, sums, wait):
            return rollout_rows(fused, rows, residual=r, all_layers=all_layers, precision=precision,
                                row_sums=sums, wait=wait)
    fused, sums = checked_fuse(attention, "attention", heads=heads, dtype=np.dtype(precision).type,
                               valid_rows=keep)
    idx = np.flatnonzero(keep)
    if idx.size != n:
        fused, sums = fused[:, idx[:, None], idx[None, :]], None
    pos = np.searchsorted(idx, rows)
    vals = rollout_rows(fused, pos, residual=r, all_layers=all_layers, precision=precision, row_sums=sums)
    if idx.size == n:
        return vals
    out = np.zeros(vals.shape[:2] + (n,))
    out[..., idx] = vals
    return out
