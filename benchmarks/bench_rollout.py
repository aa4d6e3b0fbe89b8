"""Rollout: the public ``attention_rollout`` a user calls vs a naive numpy rollout and three peers.

    python benchmarks/bench_rollout.py            # Pi0 (18 layers × 8 heads, n = 867) and n = 54
    python benchmarks/bench_rollout.py --smoke    # seconds

Every contestant starts from the same raw attention ``[layer, head, n, n]`` (float32
probabilities; at Pi0 scale the block-causal matrix a synthetic Pi0 capture stitches to) and is
timed interleaved in one process, best of --repeats, one JSON line per measurement:

* ``flowlens_public``: ``flowlens.attention_rollout(attention, query=rows, ...)``, validation
  (NaN/inf, range, row sums) and head fusion included, as a user calls it;
* ``flowlens_kernel``: ``rollout_rows`` on attention already head-fused (what a TokenGraph holds);
* ``naive``: head mean, ``rownorm(0.5·A + 0.5·I)``, the full n×n product chain, then the rows;
* ports of the peers' rollouts, written for this benchmark from their descriptions
  (reference/anchors.md): ``abnar`` (samiraabnar/attention_flow: head mean, add I and
  renormalise, product of every layer's matrix), ``vit_explain`` (jacobgil/vit-explain: head
  mean, (A + I)/2 renormalised, product to the last layer) and ``chefer`` (Chefer et al.: R ← R +
  Ā·R from R = I, unnormalised; here with Ā the plain head mean, no gradients).

Ratios are ``seconds(other) / seconds(flowlens_public)`` (> 1: flowlens is faster). Each case also
reports the largest difference of flowlens's rows from the naive float64 rollout (the peers'
normalisations differ from Abnar & Zuidema's where noted, so they are timed, not compared).
The whole run is under one BLAS thread (``--threads``), as the library runs its skinny products.
"""

# %%
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

from flowlens import attention_rollout
from flowlens.analysis.rollout import rollout_rows
from flowlens.testing import synthetic_capture


def naive_rollout(attention: np.ndarray, rows: np.ndarray, *, all_layers: bool, dtype=np.float32) -> np.ndarray:
    """Head mean, rownorm(0.5·A + 0.5·I), full products J = T @ J, then the query rows."""
    fused = attention.mean(axis=1).astype(dtype)
    eye = np.eye(fused.shape[-1], dtype=dtype)
    joint, out = None, []
    for a in fused:
        t = 0.5 * a + 0.5 * eye
        t /= t.sum(axis=-1, keepdims=True)
        joint = t if joint is None else t @ joint
        out.append(joint[rows])
    return np.stack(out) if all_layers else out[-1][None]


def abnar_rollout(attention: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """samiraabnar/attention_flow's joint attention: every layer's full rollout matrix is kept."""
    att = attention.sum(axis=1) / attention.shape[1]
    att = att + np.eye(att.shape[-1])[None]
    att = att / att.sum(axis=-1)[..., None]
    joint = np.zeros(att.shape)
    joint[0] = att[0]
    for i in range(1, att.shape[0]):
        joint[i] = att[i] @ joint[i - 1]
    return joint[:, rows]


def vit_explain_rollout(attention: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """jacobgil/vit-explain: result = Π (A + I)/2 renormalised, from the first layer up; the rows at the end."""
    n = attention.shape[-1]
    result = np.eye(n, dtype=attention.dtype)
    for layer in attention:
        fused = layer.mean(axis=0)
        a = (fused + np.eye(n, dtype=fused.dtype)) / 2
        a = a / a.sum(axis=-1, keepdims=True)
        result = a @ result
    return result[rows]


def chefer_rollout(attention: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Chefer et al.'s relevance rule R ← R + Ā·R from R = I (Ā the head mean; no gradients here)."""
    n = attention.shape[-1]
    rel = np.eye(n, dtype=attention.dtype)
    for layer in attention:
        rel = rel + layer.mean(axis=0) @ rel
    return rel[rows]


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def pi0_attention(layers: int, heads: int) -> np.ndarray:
    """float32 [layer, head, n, n]: the block-causal full matrix of a synthetic Pi0 capture's step 0."""
    cap = synthetic_capture("pi0", num_layers=layers, num_heads=heads, num_steps=1, seed=0)
    n, p = cap.layout.n, cap.layout.prefix_len
    att = np.zeros((layers, heads, n, n), dtype=np.float32)
    att[:, :, :p, :p] = cap.prefix.probs
    att[:, :, p:] = cap.steps[0].probs
    return att


def small_attention(layers: int, heads: int, n: int, seed: int = 0) -> np.ndarray:
    """float32 [layer, head, n, n] softmax attention of random logits (the embedded model's size)."""
    logits = np.random.default_rng(seed).normal(size=(layers, heads, n, n)) * 3
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def run_case(name: str, att: np.ndarray, rows: np.ndarray, all_layers: bool, repeats: int) -> None:
    fused = att.mean(axis=1, dtype=np.float32)
    contestants = {
        "flowlens_public": lambda: attention_rollout(att, query=rows, all_layers=all_layers),
        "flowlens_kernel": lambda: rollout_rows(fused, rows, all_layers=all_layers),
        "naive": lambda: naive_rollout(att, rows, all_layers=all_layers),
    }
    if all_layers:
        contestants["abnar"] = lambda: abnar_rollout(att, rows)
    else:
        contestants["vit_explain"] = lambda: vit_explain_rollout(att, rows)
        contestants["chefer"] = lambda: chefer_rollout(att, rows)
    times = {k: float("inf") for k in contestants}
    outs = {}
    for _ in range(repeats):  # interleaved: every contestant sees the same machine load
        for key, fn in contestants.items():
            secs, outs[key] = best_of(fn, 1)
            times[key] = min(times[key], secs)
    oracle = naive_rollout(att.astype(np.float64), rows, all_layers=all_layers, dtype=np.float64)
    pub = times["flowlens_public"]
    print(json.dumps({
        "case": name, "layers": att.shape[0], "heads": att.shape[1], "tokens": att.shape[-1],
        "queries": len(rows), "all_layers": all_layers,
        "seconds": {k: round(v, 5) for k, v in times.items()},
        "public_speedup_vs": {k: round(v / pub, 2) for k, v in times.items() if k != "flowlens_public"},
        "kernel_speedup_vs_naive": round(times["naive"] / times["flowlens_kernel"], 2),
        "public_max_abs_diff_vs_f64_oracle": float(np.abs(outs["flowlens_public"] - oracle).max()),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes, runs in seconds")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads for every contestant")
    args = parser.parse_args()
    layers, heads = (4, 2) if args.smoke else (18, 8)
    with threadpool_limits(args.threads, user_api="blas"):
        attention_rollout(small_attention(1, 1, 8), query=[0])  # warm-up: imports, numba cache
        big = pi0_attention(layers, heads)
        n = big.shape[-1]
        suffix = np.arange(n - 51, n)  # state + 50 actions
        warm = attention_rollout(big, query=suffix[-1:], all_layers=False)  # compiles / loads the kernel
        del warm
        for q_name, rows in (("1_query", suffix[-1:]), ("51_queries", suffix)):
            run_case(f"pi0_{q_name}_last_layer", big, rows, False, args.repeats)
        run_case("pi0_1_query_every_layer", big, suffix[-1:], True, args.repeats)
        run_case("pi0_51_queries_every_layer", big, suffix, True, args.repeats)
        small = small_attention(18, 8, 54)
        for q_name, rows in (("1_query", np.array([53])), ("all_queries", np.arange(54))):
            run_case(f"n54_{q_name}_last_layer", small, rows, False, args.repeats * 20)
            run_case(f"n54_{q_name}_every_layer", small, rows, True, args.repeats * 20)


if __name__ == "__main__":
    main()
