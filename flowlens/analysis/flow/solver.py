"""Exact max-flow on the layered attention graph (the engine behind attention flow).

Concept: attention flow (Abnar & Zuidema 2020) asks, for a query token q at the top node layer and a
sink at the bottom, for the maximum flow through a layered DAG whose edges (layer k, f) → (layer k-1,
t) carry capacity Â[f, t]. This module solves that problem exactly, in float64, on the dense layered
structure itself instead of a general adjacency-list graph.

Reduction used throughout (exact): bottom-layer nodes other than the sink have no outgoing edge, so no
flow ever enters them. Collapsing the bottom matrix into a *sink vector* ``c[f]`` (the capacity from
node (1, f) into the sink T) loses nothing: one source token j gives ``c = Â_0[:, j]``; a set S of
source tokens behind an infinite super-sink gives ``c = Â_0[:, S].sum(1)``. All problems of one query
share the internal matrices and differ only in ``c``.

Algorithm: Dinic's blocking-flow method specialised to layered dense capacity matrices.

* Flow lives in a dense per-worker array ``F[m, f, t]``; a touched-entry list resets it between
  problems (the graph is built once, never per problem). Column scans read per-column lists of
  arcs with their capacities (:func:`column_lists`), shared by all workers: no transposed copy.
* The DFS keeps the residual of each path arc on its stack and writes an arc's flow to ``F`` once,
  when the arc leaves the stack, instead of on every augmentation.
* Arcs with capacity <= tol are saturated from the start; the kernels scan per-row and per-column
  lists of the other arcs only (:func:`arc_lists`), which on peaked attention is a small fraction.
* Phase 1 uses the layer index as the distance label, so the first blocking flow needs no BFS;
  each layer keeps a bitset of live nodes and rows skip arcs into dead nodes. It runs as capacity-
  scaling rounds (``scaling``; :mod:`._driver`): first over the arcs of residual > 1e-5 only, then
  over all of them. On peaked attention this cuts the augmenting paths per problem from ≈ 10⁴–10⁵
  to ≈ 10³.
* Later phases label nodes by a *backward* BFS from T in the residual graph; at a min cut near the
  sink this BFS only visits the few sink-side nodes. Nodes are bucketed by (label, layer) so the DFS
  scans only candidate arcs.
* Early exit: the value can never exceed ``bound = min(out-capacity of q, Σ_f c[f])``; once the
  flow reaches it (within ``tol``) it is exact and the solver stops.
* Certificate: otherwise the last BFS leaves q unlabelled; the sink side W of that BFS defines an s-t
  cut whose capacity (summed in the *original*, possibly unpruned capacities) is returned as an upper
  bound. The returned value is a feasible flow (a lower bound), so ``lower <= exact <= upper`` always.
  Without pruning the gap is at most ``tol`` per cut arc (residuals <= tol count as saturated):
  measured <= 2e-10 at Pi0 scale with the default tol = 1e-12.
* Problems run in parallel over the cores (numba ``prange`` over interleaved chunks, GIL released).

Capacities are float64; there is no integer rescaling. Compiled with ``cache=True``: the first call in a
fresh environment pays a one-time compile (about 15 s of CPU: serial and parallel entry points);
later processes load the cache in well under a second.
"""

from __future__ import annotations

import numba
import numpy as np

from flowlens.analysis.flow._driver import _solve_parallel, _solve_range
from flowlens.analysis.flow._kernels import _TOUCH_CAP
from flowlens.errors import FlowlensError

SCALING = (1e-5,)  # capacity-scaling rounds before the one at tol (see _driver)
FAT_MIN_ARCS = 256  # rows try their widest arcs first when the coarsest round lists this many per row


def widest_arcs(C: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest capacities of every row, widest first.

    Args:
      C: float64 [M, n, n] capacities.
      k: arcs per row (clipped to n).

    Returns:
      int32 [M, n, k].
    """
    M, n = C.shape[0], C.shape[-1]
    k = max(0, min(int(k), n))
    out = np.empty((M, n, k), np.int32)
    if k == 0:
        return out
    for m in range(M):  # one layer at a time keeps temporaries small
        part = np.argpartition(-C[m], k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (n, 1))
        vals = np.take_along_axis(C[m], part, axis=1)
        out[m] = np.take_along_axis(part, np.argsort(-vals, axis=1, kind="stable"), axis=1)
    return out


def arc_lists(C: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """The arcs of every row with capacity > tol, in index order (CSR over all layers).

    An arc with capacity <= tol is saturated before any flow is sent and stays so, so the kernels
    scan only these lists: identical results, and on peaked attention (most entries are below
    1e-12) a fraction of the work.

    Args:
      C: float64 [M, n, n].
      tol: the solver's saturation tolerance.

    Returns:
      (ptr, col): int64 [M, n+1] where row (m, f) lists ``col[ptr[m, f]:ptr[m, f+1]]``, and int32 [nnz].
    """
    M, n = C.shape[0], C.shape[-1]
    ptr = np.zeros((M, n + 1), np.int64)
    cols = []
    start = 0
    for m in range(M):  # one layer at a time keeps index temporaries small
        keep = C[m] > tol
        ptr[m, 1:] = start + np.cumsum(keep.sum(axis=1))
        ptr[m, 0] = start
        cols.append(np.nonzero(keep)[1].astype(np.int32))
        start = int(ptr[m, n])
    col = np.concatenate(cols) if cols else np.zeros(0, np.int32)
    return ptr, col


def column_lists(C: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The arcs into every column with capacity > tol, in row order, with their capacities.

    The BFS scans a node's in-arcs in this order, reading capacities in sequence instead of a
    column of the dense matrix (no transposed copy of ``C``).

    Args:
      C: float64 [M, n, n].
      tol: the solver's saturation tolerance.

    Returns:
      (ptr, row, cap): int64 [M, n+1] where column (m, t) lists rows ``row[ptr[m, t]:ptr[m, t+1]]``,
      int32 [nnz], and float64 [nnz] with ``cap[i] = C[m, row[i], t]``.

    >>> C = np.array([[[0.5, 1e-13, 0.2], [0.0, 0.0, 0.0], [3e-12, 0.4, 1e-12]]])
    >>> ptr, row, cap = column_lists(C, 1e-12)
    >>> ptr.tolist(), row.tolist(), cap.tolist()
    ([[0, 2, 3, 4]], [0, 2, 2, 0], [0.5, 3e-12, 0.4, 0.2])
    """
    ptr, row = arc_lists(C.transpose(0, 2, 1), tol)  # a view: the rows of C's transpose are its columns
    n = C.shape[-1]
    caps = [C[m][row[ptr[m, 0]:ptr[m, n]], np.repeat(np.arange(n), np.diff(ptr[m]))] for m in range(C.shape[0])]
    return ptr, row, np.concatenate(caps) if caps else np.zeros(0)


def _round_lists(C: np.ndarray, scaling, tol: float, ptr_tol: np.ndarray, col_tol: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thresholds and arc lists (:func:`arc_lists`) of the capacity-scaling rounds.

    A coarse round is kept only when it lists at most half the arcs of the round at ``tol``
    (on flat attention every arc is wide: a coarse round would only repeat the last one).

    Returns:
      (thresholds, ptr, col): float64 [S] decreasing, the last = tol; int64 [S, M, n+1] into one
      concatenated int32 column array; round s lists the arcs of capacity > thresholds[s].
    """
    rounds = []
    for thr in sorted({float(t) for t in scaling if t > tol}, reverse=True):
        p, col = arc_lists(C, thr)
        if 2 * len(col) <= len(col_tol):
            rounds.append((thr, p, col))
    rounds.append((float(tol), ptr_tol, col_tol))
    M, n = C.shape[0], C.shape[-1]
    ptr = np.empty((len(rounds), M, n + 1), np.int64)
    offset = 0
    for s, (_, p, col) in enumerate(rounds):
        ptr[s] = p + offset
        offset += len(col)
    return np.array([r[0] for r in rounds]), ptr, np.concatenate([r[2] for r in rounds])


def reachable(C: np.ndarray, queries: np.ndarray, n: int) -> np.ndarray:
    """Nodes reachable from each top-layer query in the original graph.

    Args:
      C: float64 [M, n, n] internal capacity matrices; C[m] joins node layer m+2 to node layer m+1.
      queries: int [Q] token indices at the top node layer M+1.
      n: tokens per layer.

    Returns:
      bool [Q, M+1, n]: entry [i, k-1, f] is True when node (k, f) is reachable from query i.
    """
    M = C.shape[0]
    out = np.zeros((len(queries), M + 1, n), dtype=bool)
    for i, q in enumerate(queries):
        cur = np.zeros(n, dtype=bool)
        cur[q] = True
        out[i, M] = cur
        for k in range(M, 0, -1):  # node layer k+1 -> k
            cur = (C[k - 1][cur] > 0).any(axis=0)
            out[i, k - 1] = cur
    return out


def max_flows(C: np.ndarray, sinks: np.ndarray, queries: np.ndarray, *, tol: float = 1e-12,
              C_orig: np.ndarray | None = None, sinks_orig: np.ndarray | None = None,
              workers: int | None = None, touch_capacity: int = _TOUCH_CAP,
              sink_index: np.ndarray | None = None, scaling: tuple[float, ...] = SCALING,
              fat_arcs: int = 8,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Max-flow from top-layer query tokens into sink vectors, many problems at once.

    Args:
      C: float64 [M, n, n] capacities used for solving; C[m] joins node layer m+2 (rows) to node layer
        m+1 (columns). The query sits on node layer M+1 (with M = 0 the query is on layer 1).
      sinks: float64 [S, n]: ``sinks[s, f]`` is the capacity from node (1, f) into sink s.
      queries: int [P]: top-layer token of each problem.
      sink_index: int [P]: the sink (row of ``sinks``) of each problem; default ``arange(P)``
        (then S == P).
      tol: residual capacities <= tol count as saturated.
      C_orig, sinks_orig: the unpruned capacities when ``C``/``sinks`` were pruned; the certified upper
        bound and the trivial bound are taken in these. Default: ``C``/``sinks``.
      workers: parallel workers (default: numba's thread count).
      fat_arcs: how many widest arcs of each row the forward rounds try before the rest, when the
        coarsest round lists ``FAT_MIN_ARCS`` arcs or more per row on average (0: never).
      scaling: thresholds of the first phase's capacity-scaling rounds, run before the last round at
        ``tol`` (values <= tol, and rounds listing over half the arcs of the last, are skipped; ()
        for one round). They change the search order only: the result is exact whatever they are.
      touch_capacity: length of each worker's list of flow entries to reset between problems; a
        problem touching more falls back to zeroing the whole flow array (slower, same result).

    Returns:
      (lower, upper, phases): float64 [P] feasible flow values, float64 [P] certified cut capacities
      (lower <= exact max-flow <= upper), int64 [P] number of blocking-flow phases (0 = trivial).
    """
    C = np.ascontiguousarray(C, dtype=np.float64)
    sinks = np.ascontiguousarray(np.atleast_2d(sinks), dtype=np.float64)
    queries = np.ascontiguousarray(queries, dtype=np.int64)
    M = C.shape[0]
    n = sinks.shape[1]
    if M == 0:
        C = np.zeros((0, n, n))
    C_orig = C if C_orig is None else np.ascontiguousarray(C_orig, dtype=np.float64)
    if sinks_orig is None:
        sinks_orig = sinks
    sinks_orig = np.ascontiguousarray(np.atleast_2d(sinks_orig), dtype=np.float64)
    rptr, rcol = arc_lists(C, tol)
    cptr, ccol, ccap = column_lists(C, tol)
    thresholds, sptr, scol = _round_lists(C, scaling, tol, rptr, rcol)
    # widest arcs first only on flat attention (even the coarsest round lists many arcs per row):
    # there it spreads the flow (4x faster on the benchmark's random rows); on peaked attention
    # plain index order measured 1.5-2x faster
    flat = (sptr[0, :, -1] - sptr[0, :, 0]).sum() >= FAT_MIN_ARCS * max(M, 1) * n
    fat = widest_arcs(C, fat_arcs if flat else 0)
    uq, qidx = np.unique(queries, return_inverse=True)
    reaches = reachable(np.asarray(C_orig), uq, n)
    qidx = qidx.astype(np.int64)
    # trivial bound: min(out-capacity of the query, reachable in-capacity of the sink), original caps
    if M:
        outcap = np.asarray(C_orig)[M - 1, queries].sum(axis=1)
    else:
        outcap = np.full(len(queries), np.inf)
    P = len(queries)
    sidx = np.arange(P, dtype=np.int64) if sink_index is None else np.asarray(sink_index, np.int64)
    if (sidx.shape != (P,) or sinks.shape != sinks_orig.shape
            or (P and not 0 <= sidx.min() <= sidx.max() < sinks.shape[0])):
        raise FlowlensError(
            f"sink_index must hold one row index of sinks ({sinks.shape[0]} rows) per query ({P}), and "
            f"sinks_orig must match sinks {sinks.shape}; got sink_index shape {sidx.shape}, sinks_orig "
            f"{sinks_orig.shape}."
        )
    # in-capacity of each problem's sink over nodes its query reaches: [unique query, sink row]
    incap_q = sinks_orig @ reaches[:, 0, :].T.astype(np.float64)
    incap = incap_q[sidx, qidx]
    bounds = np.minimum(outcap, incap)
    # the same over the arcs above tol (all the solver uses): once the flow reaches it, it is maximal
    # and ``bounds`` certifies it, with no BFS or cut (the tiny arcs are the whole gap)
    out_listed = np.where(C[M - 1, queries] > tol, C[M - 1, queries], 0.0).sum(axis=1) if M else outcap
    in_listed = (np.where(sinks > tol, sinks, 0.0) @ reaches[:, 0, :].T.astype(np.float64))[sidx, qidx]
    exits = np.minimum(np.minimum(out_listed, in_listed), bounds)
    nworkers = int(workers or numba.get_num_threads())
    nworkers = max(1, min(nworkers, P))
    out_val = np.zeros(P)
    out_up = np.zeros(P)
    out_ph = np.zeros(P, np.int64)
    if P:
        if nworkers == 1:
            _solve_range(C, C_orig, fat, sinks, sinks_orig, sidx, queries, reaches, qidx, bounds, exits,
                         float(tol), np.arange(P, dtype=np.int64), touch_capacity, out_val, out_up, out_ph,
                         rptr, rcol, cptr, ccol, ccap, thresholds, sptr, scol)
        else:
            _solve_parallel(C, C_orig, fat, sinks, sinks_orig, sidx, queries, reaches, qidx, bounds, exits,
                            float(tol), nworkers, touch_capacity, out_val, out_up, out_ph,
                            rptr, rcol, cptr, ccol, ccap, thresholds, sptr, scol)
    return out_val, out_up, out_ph
