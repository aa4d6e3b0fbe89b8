"""Attention flow (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", ACL).

Concept: the attention graph has L+1 node layers of n tokens; the edge from token f at node layer
i+1 down to token t at node layer i has capacity ``Â_i[f, t]``, with
``Â_i = rownorm((1 - r)·A_i + r·I)`` (heads fused, residual r = 0.5 by default). The attention flow
from a query token q (top node layer L) to a source token j (node layer 0) is the max-flow from
(L, q) to (0, j). A *source set* S (all patches of a camera, all prompt words) is joined to a
super-sink by infinite edges: its value is the max-flow from q into S as a whole, which is at most,
and usually much less than, the sum of its members' values. A *layer map* is the flow from q to each
token at an intermediate node layer k (layer evolution).

Values are exact max-flows computed in float64 by :mod:`flowlens.analysis.flow.solver`; every value
comes with a certified bracket ``lower <= exact <= upper`` (an actual flow and an actual cut).
Without pruning the bracket is at the rounding level; with ``prune`` the solver drops edges below
``prune / n`` (faster) and the bracket says how much that could cost.

Two layers of uniform attention over 3 tokens: Â = 2/3 on the diagonal, 1/6 elsewhere. From query
0 to source 1 each middle token f passes min(Â[0, f], Â[f, 1]) = 1/6, so the flow is 0.5, while
source 0 gets the whole unit (min-cut = the query's out-edges):

>>> import numpy as np
>>> a = np.full((2, 1, 3, 3), 1 / 3)               # [layer, head, query, key]
>>> res = attention_flow(a, query=[0])
>>> np.round(res.values, 6)
array([[1. , 0.5, 0.5]])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flowlens.analysis.flow import _checks
from flowlens.analysis.flow.capacities import flow_capacities, fuse_heads, prune_capacities
from flowlens.analysis.flow.solver import max_flows
from flowlens.core.checks import check_flag
from flowlens.core.graph import TokenGraph, check_heads
from flowlens.core.query import select_query
from flowlens.errors import FlowlensError


@dataclasses.dataclass(frozen=True)
class FlowResult:
    """Attention-flow values of some query tokens.

    Attributes:
      values: float64 [query_row, source]: flow from each query (top layer) to each source token
        (input layer); divided by each row's sum when ``normalized``.
      lower: float64 [query_row, source]: a feasible flow's value (never normalised).
      upper: float64 [query_row, source]: a cut's capacity in the unpruned graph; the exact
        max-flow lies in [lower, upper].
      query_tokens: int64 [query_row]: token index of each query (the name HeadStats uses).
      sources: int64 [source]: token index of each source column.
      set_values: name -> float64 [query_row]: flow from each query into each source set (unnormalised).
      set_upper: name -> float64 [query_row]: certified upper bound of each set value.
      layers_out: node layers of ``layer_maps`` (0 = input embeddings, L-1 = just below the query).
      layer_maps: float64 [layer_out, query_row, source] flows to the source tokens at those node
        layers (normalised like ``values``), or None when no layer was asked for.
      normalized: whether ``values``/``layer_maps`` rows were divided by their sums.
      prune: relative pruning threshold used (None: exact graph).
      residual: residual weight r used (None: no residual).
    """

    values: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    query_tokens: np.ndarray
    sources: np.ndarray
    set_values: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    set_upper: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    layers_out: tuple[int, ...] = ()
    layer_maps: np.ndarray | None = None
    normalized: bool = False
    prune: float | None = None
    residual: float | None = 0.5

    @property
    def max_gap(self) -> float:
        """Largest ``upper - lower`` over all single-source values (0 when exact to rounding)."""
        return float((self.upper - self.lower).max()) if self.upper.size else 0.0


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    s = x.sum(axis=-1, keepdims=True)
    return np.divide(x, s, out=np.zeros_like(x), where=s > 0)


def _solve_layer(C: np.ndarray, k: int, qpos: np.ndarray, sinks_cols: np.ndarray, *, prune, tol,
                 workers) -> tuple[np.ndarray, np.ndarray]:
    """Flows from every query (top) into each sink vector at node layer k.

    ``sinks_cols`` is float64 [P, n] built from ``C[k]`` (column sums over each sink's tokens).
    Returns (lower, upper), each [query, P].
    """
    inner = C[k + 1:]
    Q, P = len(qpos), sinks_cols.shape[0]
    queries = np.repeat(qpos, P)
    sink_index = np.tile(np.arange(P), Q)
    if prune is None:
        lo, up, _ = max_flows(inner, sinks_cols, queries, tol=tol, workers=workers, sink_index=sink_index)
    else:
        thr = prune / C.shape[-1]
        lo, up, _ = max_flows(prune_capacities(inner, prune), np.where(sinks_cols >= thr, sinks_cols, 0.0),
                              queries, tol=tol, workers=workers, C_orig=inner, sinks_orig=sinks_cols,
                              sink_index=sink_index)
    return lo.reshape(Q, P), up.reshape(Q, P)


def _flow_from_capacities(C: np.ndarray, n: int, position: np.ndarray, *, query, sources,
                          normalize: bool, source_sets, layers_out, tol, prune, workers,
                          residual) -> FlowResult:
    """Shared back end: ``C`` float64 [layer, m, m] over valid tokens, ``position`` token -> node."""
    L = C.shape[0]
    q_tok = _checks.token_positions("query", query, n, position, what="tokens")
    all_valid = np.flatnonzero(position >= 0)
    src_tok = (all_valid if sources is None
               else _checks.token_positions("sources", sources, n, position, what="tokens"))
    sets = _checks.check_source_sets(source_sets, n, position)
    layers = _checks.check_layers_out(layers_out, L)
    normalize = check_flag("normalize", normalize)
    tol = _checks.check_tol(tol)
    prune = _checks.check_prune(prune)
    workers = _checks.check_workers(workers)
    qpos, spos = position[q_tok], position[src_tok]

    cols = C[0][:, spos].T
    set_cols = np.stack([C[0][:, position[idx]].sum(axis=1) for idx in sets.values()]) if sets else None
    all_cols = cols if set_cols is None else np.concatenate([cols, set_cols])
    lo, up = _solve_layer(C, 0, qpos, all_cols, prune=prune, tol=tol, workers=workers)
    S = len(spos)
    lower, upper = lo[:, :S], up[:, :S]
    set_values = {name: lo[:, S + i].copy() for i, name in enumerate(sets)}
    set_upper = {name: up[:, S + i].copy() for i, name in enumerate(sets)}

    maps = None
    if layers:
        maps = np.empty((len(layers), len(qpos), S))
        for i, k in enumerate(layers):
            if k == 0:
                maps[i] = lower
            else:
                maps[i] = _solve_layer(C, k, qpos, C[k][:, spos].T, prune=prune, tol=tol,
                                       workers=workers)[0]
        if normalize:
            maps = _normalise_rows(maps)
    values = _normalise_rows(lower) if normalize else lower.copy()
    return FlowResult(values=values, lower=lower, upper=upper, query_tokens=q_tok, sources=src_tok,
                      set_values=set_values, set_upper=set_upper, layers_out=layers, layer_maps=maps,
                      normalized=bool(normalize), prune=prune, residual=residual)


def _positions(valid: np.ndarray | None, n: int) -> np.ndarray:
    if valid is None:
        return np.arange(n, dtype=np.int64)
    pos = np.full(n, -1, dtype=np.int64)
    pos[valid] = np.arange(int(valid.sum()))
    return pos


def attention_flow(
    attention: Any,
    *,
    query: int | Sequence[int] | np.ndarray,
    heads: str | int = "mean",
    residual: float | None = 0.5,
    sources: Sequence[int] | np.ndarray | None = None,
    normalize: bool = False,
    source_sets: Mapping[str, Sequence[int] | np.ndarray] | None = None,
    layers_out: int | Sequence[int] | str | None = None,
    valid: np.ndarray | None = None,
    renormalize: bool | None = None,
    prune: float | None = None,
    tol: float = 1e-12,
    workers: int | None = None,
) -> FlowResult:
    """Exact attention flow from query tokens to source tokens (Abnar & Zuidema 2020).

    Args:
      attention: float [layer, head, query, key] attention probabilities, or [layer, query, key]
        already head-fused (query == key == n tokens); numpy or jax arrays.
      query: token index or indices (ints) of the queries at the top node layer, or a bool mask
        [token]; floats (1.7, even 1.0) are refused. Query names
        ("actions" ...) need a layout: use ``flow(TokenGraph.from_attention(layout, attention), ...)``.
      heads: "mean" (default), "max", "min", or an int head index (4-D attention only).
      residual: r in ``rownorm((1 - r)·A + r·I)``; 0.5 as in the paper, None/0 for none.
      sources: token indices of the source columns at the input layer (default: all valid tokens).
      normalize: divide each query's values by their sum (the paper's per-row normalisation).
      source_sets: name -> token indices; each set is one super-sink (its max-flow, not a sum).
      layers_out: node layers (0..layer-1), "all", or None for per-layer flow maps to ``sources``.
      valid: bool [n]; invalid tokens are removed as rows and columns before the residual is added.
      renormalize: row-normalise after the residual (default: only when a residual is added).
      prune: drop capacities below ``prune / m`` (m valid tokens) for speed; values become certified
        lower bounds and ``upper`` bounds the loss. None (default) solves the exact graph.
      tol: residual capacities <= tol count as saturated (certified bracket width scales with it).
      workers: threads for the solver (default: numba's thread count).

    Returns:
      FlowResult with ``values`` float64 [query_row, source] and bounds, set values and layer maps.

    Raises:
      FlowlensError: bad shapes or dtypes, empty axes, attention not finite or outside [0, 1],
        indices that are not ints (or a mask), out of range or invalid,
        residual outside [0, 1], unknown heads, heads other than "mean" for fused attention.
    """
    if np.ndim(attention) not in (3, 4):
        raise FlowlensError(
            f"attention must be [layer, head, query, key] or, heads already fused, [layer, query, key]; "
            f"got shape {np.shape(attention)}. Add the missing axes (e.g. a[None] for a single layer)."
        )
    fused = np.ndim(attention) == 3
    if isinstance(query, str):
        raise FlowlensError(
            f"query={query!r} is a query name, but attention_flow has no token layout to resolve it; "
            "pass token indices, or use flow(TokenGraph.from_attention(layout, attention), query)."
        )
    if fused and not (isinstance(heads, str) and heads == "mean"):
        raise FlowlensError(
            f"heads={heads!r} was given, but attention is [layer, query, key] (heads already fused); "
            "leave heads out, or pass [layer, head, query, key] attention."
        )
    if not fused and not isinstance(check_heads(heads), (str, int)):
        raise FlowlensError(
            f"heads={heads!r}: attention flow fuses heads by 'mean', 'max', 'min' or one head index; "
            "average a list of heads first and pass [layer, query, key] attention."
        )
    a = _checks.check_attention(attention, fused=fused)
    r = _checks.check_residual(residual)
    n = a.shape[-1]
    v = _checks.check_valid(valid, n)
    renormalize = None if renormalize is None else check_flag("renormalize", renormalize)
    C = flow_capacities(a, heads=heads, residual=r, valid=v, renormalize=renormalize, fused=fused)
    return _flow_from_capacities(C, n, _positions(v, n), query=query, sources=sources,
                                 normalize=normalize, source_sets=source_sets, layers_out=layers_out,
                                 tol=tol, prune=prune, workers=workers, residual=r)


def flow(
    graph: TokenGraph,
    query: str | Sequence[int] | np.ndarray | None = None,
    *,
    sources: Sequence[int] | np.ndarray | None = None,
    source_sets: Mapping[str, Sequence[int] | np.ndarray] | None = None,
    normalize: bool = False,
    layers_out: int | Sequence[int] | str | None = None,
    prune: float | None = None,
    tol: float = 1e-12,
    workers: int | None = None,
    **select,
) -> FlowResult:
    """Attention flow through a TokenGraph for chosen query tokens (the flow twin of ``rollout``).

    Reads ``graph.attention`` (float [layer, node, node], or [layer, head, node, node] when heads were
    kept: fused by mean here) and ``graph.residual``; rows are renormalised as in
    ``TokenGraph.transition``. Tokens the graph removed (masked, padding) are not nodes.

    Args:
      graph: a TokenGraph.
      query: layout token indices of the queries, or a query name ("action:0", "actions", "last",
        "state"; see ``flowlens.core.query``); or give selection criteria as keywords
        (``kind="action"``, ``horizon=0`` ...). Default: all action tokens.
      sources: layout token indices of the sources (default: every node of the graph).
      source_sets: name -> layout token indices (e.g. ``{"base camera": layout.select(camera="base_0_rgb")}``).
      normalize, layers_out, prune, tol, workers: as in :func:`attention_flow`.

    Returns:
      FlowResult with ``values`` float64 [query, source]; its ``query_tokens`` / ``sources`` are layout
      token indices.
    """
    if not isinstance(graph, TokenGraph):
        raise FlowlensError(
            f"graph must be a TokenGraph, got {type(graph).__name__}; build one with "
            "TokenGraph.from_capture(capture) (or call attention_flow on an attention array)."
        )
    tokens = select_query(graph.layout, query, **select)
    graph.node_index(tokens)  # masked / padding queries: the graph's own message
    att = graph.attention
    if att.ndim == 4:
        att = fuse_heads(_checks.check_attention(att, fused=False), "mean")
    a = _checks.check_attention(att, fused=True)
    r = _checks.check_residual(graph.residual)
    C = flow_capacities(a, residual=r, renormalize=True, fused=True)
    position = np.full(graph.layout.n, -1, dtype=np.int64)
    position[graph.nodes] = np.arange(graph.num_nodes)
    return _flow_from_capacities(C, graph.layout.n, position, query=tokens, sources=sources,
                                 normalize=normalize, source_sets=source_sets, layers_out=layers_out,
                                 tol=tol, prune=prune, workers=workers, residual=r)
