"""Benchmark: exact attention flow (flowlens.analysis.flow) against networkx and scipy.

Run (full, a few minutes on 2 cores):   python benchmarks/bench_flow.py
Smoke (seconds):                         python benchmarks/bench_flow.py --smoke

Prints one JSON line per measurement:
  compile   first solver call in this process (numba JIT compile, or cache load when warm).
  networkx  (a) speed-up over networkx max-flow on sizes networkx finishes (graph built once per
            query, one maximum_flow_value per source, as in Abnar & Zuidema's compute_node_flow),
            for the public call and for the kernel alone.
  scipy     (b) a plain per-source scipy.sparse.csgraph.maximum_flow loop at Pi0 scale (graph built
            per source with int32 capacities ×1e6, as a naive user would) on a few sources,
            extrapolated to all sources (labelled "extrapolated").
  target    (c) one action token → all 816 prefix tokens at Pi0 scale (18 layers, n = 867,
            block-causal), random and peaked attention. ``public_s``: the call a user makes,
            ``flowlens.attention_flow(attention[:, None], ...)`` with validation, head fusion and
            capacities; ``kernel_s``: ``solver.max_flows`` alone on precomputed capacities.
Timed calls come after a warm-up call on a tiny graph, so compilation is reported only by "compile".
Every line carries the 1-minute load average: on a shared machine wall times stretch with it,
``cpu_s`` (this process's CPU time) does not.
"""

# %%
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

N_PREFIX, N_STATE, N_ACT, LAYERS = 816, 1, 50, 18


def emit(**record) -> None:
    record["load1"] = round(os.getloadavg()[0], 2)
    print(json.dumps(record), flush=True)


def block_causal(n_prefix: int, n_state: int, n_act: int) -> np.ndarray:
    """Pi0 mask: prefix ↔ prefix, state → prefix + itself, actions → everything. bool [n, n]."""
    n = n_prefix + n_state + n_act
    m = np.zeros((n, n), bool)
    m[:n_prefix, :n_prefix] = True
    m[n_prefix:n_prefix + n_state, :n_prefix + n_state] = True
    m[n_prefix + n_state:] = True
    return m


def make_attention(layers: int, mask: np.ndarray, kind: str, seed: int = 0, scale: float = 5.0,
                   sinks: tuple[int, ...] = (0, 256)) -> np.ndarray:
    """Head-fused attention float32 [layer, n, n]: 'random' rows, or 'peaked' softmax(scale·z),
    z standard normal, with logit +2.5·scale on the sink tokens (first patch of each camera)."""
    rng = np.random.default_rng(seed)
    n = mask.shape[0]
    out = np.empty((layers, n, n), np.float32)
    for layer in range(layers):
        if kind == "random":
            a = np.where(mask, rng.random((n, n)), 0.0)
        else:
            z = scale * rng.standard_normal((n, n))
            z[:, list(sinks)] += 2.5 * scale
            z = np.where(mask, z, -np.inf)
            a = np.exp(z - z.max(1, keepdims=True))
        out[layer] = a / a.sum(1, keepdims=True)
    return out


def nx_graph(C: np.ndarray):
    import networkx as nx

    L, n, _ = C.shape
    g = nx.DiGraph()
    for i in range(L):
        fs, ts = np.nonzero(C[i] > 0)
        g.add_edges_from(((i + 1, f), (i, t), {"capacity": float(C[i, f, t])})
                         for f, t in zip(fs.tolist(), ts.tolist(), strict=True))
    return g


def scipy_flow_per_source(C: np.ndarray, q: int, j: int) -> float:
    """The naive user's loop body: build the full layered graph, int32 capacities ×1e6, solve."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    L, n, _ = C.shape
    rows, cols, caps = [], [], []
    for i in range(L):
        fs, ts = np.nonzero(C[i] > 0)
        rows.append((i + 1) * n + fs)
        cols.append(i * n + ts)
        caps.append(np.round(C[i, fs, ts] * 1e6).astype(np.int32))
    N = (L + 1) * n
    g = csr_matrix((np.concatenate(caps), (np.concatenate(rows), np.concatenate(cols))), shape=(N, N))
    return maximum_flow(g, L * n + q, j).flow_value / 1e6


# %%
def bench_compile() -> None:
    from flowlens.analysis.flow import solver

    cache_dir = Path(solver.__file__).parent / "__pycache__"
    warm = any(cache_dir.glob("_kernels.*.nbi")) if cache_dir.exists() else False
    C = np.full((2, 4, 4), 0.25)
    t0 = time.perf_counter()
    solver.max_flows(C[1:], C[0].T.copy(), np.zeros(4, np.int64), workers=1)
    t1 = time.perf_counter()
    solver.max_flows(C[1:], C[0].T.copy(), np.zeros(4, np.int64), workers=2)
    t2 = time.perf_counter()
    emit(bench="compile", first_call_serial_s=round(t1 - t0, 3), first_call_parallel_s=round(t2 - t1, 3),
         numba_cache_was_warm=warm)


def public_flow(att: np.ndarray, q: int, sources):
    """The public call a user makes on head-fused attention [layer, n, n] (validation included)."""
    import flowlens

    return flowlens.attention_flow(att, query=[q], sources=sources)


def kernel_flow(C: np.ndarray, q: int, sources) -> tuple[np.ndarray, np.ndarray]:
    """The solver alone on precomputed capacities C [layer, n, n]: (lower, upper) per source."""
    from flowlens.analysis.flow import solver

    src = np.asarray(sources)
    lo, up, _ = solver.max_flows(C[1:], C[0][:, src].T.copy(), np.full(len(src), q))
    return lo, up


def bench_networkx(layers: int, n: int, n_sources: int, algorithm: str, seed: int = 0) -> None:
    import networkx as nx
    from networkx.algorithms.flow import edmonds_karp, preflow_push

    from flowlens.analysis.flow import flow_capacities

    rng = np.random.default_rng(seed)
    a = rng.random((layers, n, n))
    a /= a.sum(-1, keepdims=True)
    C = flow_capacities(a, fused=True)
    q, sources = n - 1, list(range(0, n, max(1, n // n_sources)))[:n_sources]
    func = {"edmonds_karp": edmonds_karp, "preflow_push": preflow_push}[algorithm]
    t0 = time.perf_counter()
    g = nx_graph(C)
    ref = [nx.maximum_flow_value(g, (layers, q), (0, j), flow_func=func) for j in sources]
    t_nx = time.perf_counter() - t0
    public_flow(a, q, sources)  # warm (same shapes)
    reps = 5
    t0 = time.perf_counter()
    for _ in range(reps):
        res = public_flow(a, q, sources)
    t_fl = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        kernel_flow(C, q, sources)
    t_k = (time.perf_counter() - t0) / reps
    emit(bench="networkx", layers=layers, n=n, sources=len(sources), networkx_algorithm=algorithm,
         networkx_s=round(t_nx, 4), public_s=round(t_fl, 5), kernel_s=round(t_k, 5),
         speedup_public=round(t_nx / t_fl, 1), speedup_kernel=round(t_nx / t_k, 1),
         max_abs_diff=float(np.abs(res.values[0] - np.array(ref)).max()))


def bench_scipy(att: np.ndarray, kind: str, q: int, n_sources: int, n_total: int,
                flowlens_total_s: float | None) -> None:
    from flowlens.analysis.flow import flow_capacities

    C = flow_capacities(att, fused=True)
    sources = np.linspace(0, N_PREFIX - 1, n_sources).astype(int).tolist()
    times, vals = [], []
    for j in sources:
        t0 = time.perf_counter()
        vals.append(scipy_flow_per_source(C, q, j))
        times.append(time.perf_counter() - t0)
    per = float(np.mean(times))
    ours = public_flow(att, q, sources).values[0]
    rec = dict(bench="scipy", kind=kind, layers=att.shape[0], n=att.shape[-1], sources_measured=n_sources,
               scipy_per_source_s=round(per, 3), scipy_all_sources_s_extrapolated=round(per * n_total, 1),
               extrapolated_to_sources=n_total,
               int_scaling_max_abs_error=float(np.abs(np.array(vals) - ours).max()))
    if flowlens_total_s is not None:
        rec["flowlens_public_all_sources_s_measured"] = round(flowlens_total_s, 2)
        rec["speedup_public_extrapolated"] = round(per * n_total / flowlens_total_s, 1)
    emit(**rec)


def bench_target(att: np.ndarray, kind: str, q: int, sources: np.ndarray, scale: float | None = None
                 ) -> float:
    from flowlens.analysis.flow import flow_capacities

    c0, t0 = time.process_time(), time.perf_counter()
    res = public_flow(att, q, sources)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    v = res.values[0]
    C = flow_capacities(att, fused=True)
    t0 = time.perf_counter()
    lo, up = kernel_flow(C, q, sources)
    kernel = time.perf_counter() - t0
    bound = np.minimum(C[-1][q].sum(), C[0][:, sources].sum(0))  # min(out of q, into the source)
    emit(bench="target", kind=kind, scale=scale, layers=att.shape[0], n=att.shape[-1], query=q,
         sources=len(sources), public_s=round(total, 2), public_cpu_s=round(cpu, 2),
         kernel_s=round(kernel, 2), public_over_kernel=round(total / kernel, 2),
         per_source_ms=round(1e3 * total / len(sources), 2), public_equals_kernel=bool(
             np.array_equal(v, lo)), max_gap=res.max_gap, kernel_max_gap=float((up - lo).max()), value_min=round(float(v.min()), 4), value_median=round(float(np.median(v)), 4),
         value_max=round(float(v.max()), 4),
         at_trivial_bound_fraction=round(float(np.mean(v >= bound - 1e-9)), 3))
    return total


# %%
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, runs in seconds")
    p.add_argument("--scipy-sources", type=int, default=3)
    p.add_argument("--scales", default="5,10", help="logit scales of the peaked attention (comma list)")
    args = p.parse_args()

    bench_compile()
    if args.smoke:
        bench_networkx(4, 16, 3, "preflow_push")
        n_pre, n_act = 64, 8
        mask = block_causal(n_pre, 1, n_act)
        for kind in ("random", "peaked"):
            att = make_attention(6, mask, kind, scale=5.0, sinks=(0, 32))
            bench_target(att, kind, n_pre + 1, np.arange(n_pre), None if kind == "random" else 5.0)
        return

    bench_networkx(6, 32, 4, "edmonds_karp")
    bench_networkx(6, 32, 8, "preflow_push")
    bench_networkx(6, 64, 4, "preflow_push")
    mask = block_causal(N_PREFIX, N_STATE, N_ACT)
    q = N_PREFIX + N_STATE  # the first action token
    runs = [("random", None)] + [("peaked", float(x)) for x in args.scales.split(",")]
    for i, (kind, scale) in enumerate(runs):
        att = make_attention(LAYERS, mask, kind, scale=scale or 0.0)
        total = bench_target(att, kind, q, np.arange(N_PREFIX), scale)
        if i < 2:  # the scipy loop on random and on the first peaked scale
            bench_scipy(att, kind, q, args.scipy_sources, N_PREFIX, total)


if __name__ == "__main__":
    main()
