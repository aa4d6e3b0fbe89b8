"""Per-head report at Pi0 scale, against one rollout of the same capture measured in the same run.

    python benchmarks/bench_heads.py            # Pi0: 18 layers × 8 heads × 10 steps, 50 action queries
    python benchmarks/bench_heads.py --smoke    # seconds

The "head report" is every per-head statistic for all layers × heads × steps on the action queries:
group mass, entropy, sink mass, key mass (head_stats), the layers × heads image grids of every
valid camera and the word grid, JS similarity of all L·H heads (query-averaged maps), role
clustering, head ranking for a word and for the object patches, action-to-action attention with
its summaries. The yardstick is one rollout (step 0, action queries) via ``flowlens.rollout``:
building the head-fused TokenGraph from the capture plus the rollout itself (and the rollout
alone). Also measured: rollout of all steps (shared-prefix vs per-step chains), the per-query JS
similarity of one step, and the step report. Best of --repeats; one JSON line per measurement.
"""

# %%
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from flowlens import TokenGraph, rollout
from flowlens.analysis.actions import action_attention, summarize_actions
from flowlens.analysis.head_grids import head_grids
from flowlens.analysis.head_roles import head_roles, head_similarity
from flowlens.analysis.heads import head_attention, head_stats, rank_heads
from flowlens.analysis.step_rollout import rollout_all_steps
from flowlens.analysis.steps import step_report
from flowlens.testing import synthetic_capture


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def head_report(cap, object_patches: np.ndarray) -> dict:
    """Every per-head statistic of the action queries, for every step."""
    out = {}
    for step in range(cap.num_steps):
        ha = head_attention(cap, step=step)  # [layer, head, 50 actions, valid keys]
        stats = head_stats(ha)
        out[step] = {
            "stats": stats,
            "grids": head_grids(stats),
            "similarity": head_similarity(stats),
            "roles": head_roles(stats),
            "rank_word": rank_heads(stats, words="bowl"),
            "rank_object": rank_heads(stats, tokens=object_patches),
            "actions": summarize_actions(action_attention(ha)),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes, runs in seconds")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    layers, heads, steps = (3, 2, 2) if args.smoke else (18, 8, 10)
    repeats = 1 if args.smoke else args.repeats
    t0 = time.perf_counter()
    cap = synthetic_capture("pi0", num_layers=layers, num_heads=heads, num_steps=steps, seed=0)
    objects = np.asarray(cap.metadata["object_patches"])
    print(
        json.dumps(
            {
                "what": "setup",
                "layers": layers,
                "heads": heads,
                "steps": steps,
                "tokens": cap.layout.n,
                "queries": int(cap.layout.actions.size),
                "capture_mb": round(cap.nbytes / 1e6, 1),
                "synthetic_capture_s": round(time.perf_counter() - t0, 2),
            }
        )
    )

    def one_rollout():
        return rollout(TokenGraph.from_capture(cap, 0), kind="action")

    base, _ = best_of(one_rollout, repeats)
    graph = TokenGraph.from_capture(cap, 0)
    roll_only, _ = best_of(lambda: rollout(graph, kind="action"), repeats)

    def emit(what: str, secs: float, **extra) -> None:
        print(
            json.dumps(
                {
                    "what": what,
                    "seconds": round(secs, 4),
                    "x_one_rollout": round(secs / base, 2),
                    "x_rollout_kernel_only": round(secs / roll_only, 2),
                    **extra,
                }
            )
        )

    emit("one_rollout(graph build + rollout, step 0)", base)
    emit("rollout_kernel_only(step 0)", roll_only)

    secs, report = best_of(lambda: head_report(cap, objects), repeats)
    emit("head_report(all layers x heads x steps)", secs, per_step_s=round(secs / steps, 4))
    first = report[0]
    ha = head_attention(cap, step=0)
    for name, fn in [
        ("  head_attention(rows of one step)", lambda: head_attention(cap, step=0)),
        ("  head_stats(one step)", lambda: head_stats(ha)),
        ("  head_grids(one step)", lambda: head_grids(first["stats"])),
        ("  head_similarity(one step, query-mean)", lambda: head_similarity(first["stats"])),
        ("  head_roles(one step)", lambda: head_roles(first["stats"])),
        ("  action_attention+summary(one step)", lambda: summarize_actions(action_attention(ha))),
    ]:
        emit(name, best_of(fn, repeats)[0])
    emit("head_similarity(one step, per query)", best_of(lambda: head_similarity(ha, per_query=True), 1)[0])

    for all_layers in (True, False):
        tag = "all_layers" if all_layers else "last_layer"
        fast_method = "forward" if all_layers else "stacked"
        fast, res = best_of(
            lambda al=all_layers, m=fast_method: rollout_all_steps(cap, all_layers=al, method=m), repeats
        )
        slow, ref = best_of(lambda al=all_layers: rollout_all_steps(cap, all_layers=al, method="per_step"), 1)
        auto = rollout_all_steps(cap, all_layers=all_layers).method
        emit(
            f"rollout_all_steps({tag}, {fast_method})",
            fast,
            auto_picks=auto,
            max_abs_diff_vs_per_step=float(np.abs(res.values - ref.values).max()),
        )
        emit(f"rollout_all_steps({tag}, per_step)", slow)
    emit("step_report(all steps)", best_of(lambda: step_report(cap), 1)[0])
    roles = first["roles"]
    print(
        json.dumps(
            {
                "what": "sanity",
                "roles": list(roles.cluster_names),
                "top_object_heads": [list(x[:2]) for x in first["rank_object"].top(3)],
                "mean_sink_mass_last_layer": round(float(first["stats"].sink_mass[-1].mean()), 4),
            }
        )
    )


if __name__ == "__main__":
    main()
