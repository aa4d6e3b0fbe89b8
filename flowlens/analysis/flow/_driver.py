"""The solver's per-worker loop: one max-flow problem after another on one set of workspaces.

Concept: each problem (query q, sink vector c) first sends flow in capacity-scaling rounds: round
s is a blocking flow on the forward layered DAG (label = layer, no BFS) over the arcs and sink arcs
of residual > θ_s (θ = ``solver.SCALING``, then the solver's tolerance). On peaked attention a
row's ≈ 200 arcs above 1e-12 mostly carry 1e-12 … 1e-5 while the flow rides a few wide ones: the
coarse round routes it over ≈ 13 arcs per row with ≈ 10³ augmenting paths instead of the ≈ 10⁴–
10⁵ tiny ones a single round finds, and the last round only tops up what the thin arcs add. Every
round augments along forward arcs of residual > θ_s ≥ tol, so the flow stays feasible. When the
rounds do not reach the trivial bound, Dinic's BFS / blocking-flow phases at ``tol``
(:mod:`._kernels`) finish the job, so the value is exact as before: it ends at the bound or with a
BFS whose sink side is a certified cut. Rows try their widest arcs first only on flat attention
(long lists even in the coarsest round); on peaked rows index order measured faster. A problem also
stops as soon as its flow fills the query's or the sink's listed arcs (``exits``): then it is
maximal, and the trivial bound over all arcs certifies it without a BFS or a cut. Workspaces are
allocated once per worker and reset between problems through lists of the entries a problem
touched. Problems are spread over threads with ``prange`` (GIL released). Nothing here validates
input: :func:`.solver.max_flows` is the entry point.

Development note: numba's on-disk cache keys a compiled function on its own file, so after editing
``_kernels.py`` delete ``__pycache__/*.nb[ic]`` here, or this driver keeps the old kernels.
"""

from __future__ import annotations

import numba
import numpy as np

from flowlens.analysis.flow._kernels import (
    _bfs,
    _blocking_flow,
    _buckets,
    _cut_capacity,
    _first_phase,
    _kill,
    _reset,
)


@numba.njit(cache=True, nogil=True)
def _solve_range(C, C_orig, fat, sinks, sinks_orig, sidx, queries, reaches, qidx, bounds, exits,
                 tol, problems, touch_cap, out_val, out_up, out_phases,
                 rptr, rcol, cptr, ccol, ccap, thresholds, sptr, scol):
    """Solve the listed problems sequentially with one workspace (one worker)."""
    M = C.shape[0]
    n = sinks.shape[1]
    top = M + 1
    N = top * n
    T = N
    F = np.zeros((max(M, 1), n, n))
    fT = np.zeros(n)
    lab = np.empty(N + 1, np.int64)
    ptr = np.zeros(N + 1, np.int64)
    queue = np.empty(N + 1, np.int64)
    stack = np.empty(N + 2, np.int64)
    kinds = np.empty(N + 2, np.int64)
    res = np.empty(N + 2)
    add = np.zeros(N + 2)
    touched = np.empty(touch_cap, np.int64)
    nl = top + 2
    nw = (n + 63) // 64
    alive0 = np.zeros((top, nw), np.uint64)
    for k in range(top):
        for t in range(n):
            alive0[k, t >> 6] |= np.uint64(1) << np.uint64(t & 63)
    alive = alive0.copy()
    bstart = np.zeros(1, np.int64)
    bnodes = np.empty(N + 1, np.int64)
    nt = 0
    overflow = False
    for pi in problems:
        _reset(F, touched, nt, overflow)
        nt = 0
        overflow = False
        fT[:] = 0.0
        c = sinks[sidx[pi]]
        q = queries[pi]
        reach = reaches[qidx[pi]]
        bound = bounds[pi]  # min(out-capacity of q, in-capacity of the sink), original capacities
        ebound = exits[pi]  # the same over the arcs the solver lists: no flow can exceed it
        if bound <= tol:
            out_val[pi] = 0.0
            out_up[pi] = bound
            out_phases[pi] = 0
            continue
        if M == 0:
            out_val[pi] = c[q]
            out_up[pi] = sinks_orig[sidx[pi], q]
            out_phases[pi] = 0
            continue
        phases = 1
        total = 0.0
        upper = bound
        last = thresholds.shape[0] - 1
        for s in range(last + 1):  # capacity scaling: forward rounds over residual > thr
            thr = thresholds[s]
            alive[:] = alive0
            live_sinks = 0
            for f in range(n):
                if not c[f] - fT[f] > thr:
                    _kill(alive, 0, f)
                elif c[f] > tol:
                    live_sinks += 1
            # a coarse round stops once the rest could hide in sink arcs below thr: the next round
            # sends it over every arc (a full search here would only prove it cannot)
            exit_at = ebound - tol if s == last else ebound - thr * live_sinks
            ptr[:] = 0
            total, nt = _first_phase(C, F, c, fT, q, top, exit_at, thr, alive, fat, ptr, total, stack, kinds,
                                     res, add, touched, nt, sptr[s], scol)
            if total >= ebound - tol:
                break
        while total < ebound - tol:  # Dinic phases at tol: reverse arcs, longer paths
            ds, nq = _bfs(C, F, c, fT, reach, q, top, tol, lab, queue, T, rptr, rcol, cptr, ccol, ccap)
            if ds < 0:  # no augmenting path at all: the BFS's sink side is a min cut
                upper = min(_cut_capacity(C_orig, sinks_orig[sidx[pi]], lab, reach, q, top, n), bound)
                break
            phases += 1
            if bstart.shape[0] < (ds + 1) * nl + 1:
                bstart = np.zeros((ds + 1) * nl + 1, np.int64)
            _buckets(lab, queue, nq, top, n, ds, bstart, bnodes)
            for i in range(nq):
                ptr[queue[i]] = 0
            total, nt = _blocking_flow(C, F, c, fT, q, top, tol, lab, ptr, bstart, bnodes, nl,
                                       total, ebound, stack, kinds, res, add, touched, nt)
        if nt > touch_cap:
            overflow = True
        out_val[pi] = min(total, upper)
        out_up[pi] = upper
        out_phases[pi] = phases


@numba.njit(cache=True, parallel=True)
def _solve_parallel(C, C_orig, fat, sinks, sinks_orig, sidx, queries, reaches, qidx, bounds, exits,
                    tol, nworkers, touch_cap, out_val, out_up, out_phases,
                    rptr, rcol, cptr, ccol, ccap, thresholds, sptr, scol):
    """Split the problems over ``nworkers`` threads, interleaved (problem i goes to worker i % w)."""
    P = queries.shape[0]
    for w in numba.prange(nworkers):
        problems = np.arange(w, P, nworkers)
        _solve_range(C, C_orig, fat, sinks, sinks_orig, sidx, queries, reaches, qidx, bounds, exits,
                     tol, problems, touch_cap, out_val, out_up, out_phases,
                     rptr, rcol, cptr, ccol, ccap, thresholds, sptr, scol)
