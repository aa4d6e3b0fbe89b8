"""Benchmark: the value-based attributions on the embedded policy — cost and query discrimination.

Run (≈ 1–2 min on a 2-core CPU):   python benchmarks/bench_attribution.py
Smoke (seconds):                  python benchmarks/bench_attribution.py --smoke

For held-out reach frames of the embedded tabletop task (:mod:`flowlens.tasks.tabletop.evaluate`)
it captures one inference with the residual stream and every head, then:

* **cost**: wall time of each method (norm, ALTI, value zeroing: every layer, every recorded
  step; ALTI flow and classic flow: after the last layer, step 0) and of the capture, each
  relative to one plain ``sample_actions`` (no capture) of the same frame, compiled first;
* **query discrimination** (issue 17: classic attention flow gives every query the same map):
  for each action query token separately, the last-layer score map at step 0 (normalised to sum
  1 over the valid tokens); the spread is the mean total-variation distance between the maps of
  two different queries (0: every query gets the same map; 1: disjoint maps). Classic flow
  (attention + 0.5 identity) against flow over ALTI capacities, with rollout and ALTI beside.

One JSON line per frame and a summary line (mean ± standard error over frames).

``--pi0-layer`` instead times one *prefix layer at Pi0 size* (PaliGemma 2B: 8 heads, 1 KV head,
head size 256, width 2048, MLP 16384; 816 prefix tokens, random weights, float32): the model's
own ``gemma.block`` against norm + ALTI (``decompose.contributions``, chunked over query rows) and
the value vectors, the cost per layer relative to the forward layer.
"""

# %%
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _timed(fn, repeat: int = 1):
    fn()  # compile / warm
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    return (time.perf_counter() - t0) / repeat, out


def pi0_layer(rows_chunk: int = 32) -> dict:
    """Seconds of one Pi0-size prefix layer: forward (gemma.block) vs values + norm/ALTI contributions."""
    import jax
    import jax.numpy as jnp

    from flowlens.attribution import decompose
    from flowlens.model import gemma
    from flowlens.model.config import get_config

    cfg = get_config("pi0_libero")
    c0 = cfg.paligemma
    n, h, d, f, p = c0.num_heads, c0.head_dim, c0.width, c0.mlp_dim, cfg.prefix_len
    keys = iter(jax.random.split(jax.random.key(0), 8))
    lp = {"attn": {"q_einsum": {"w": jax.random.normal(next(keys), (n, d, h)) * d**-0.5},
                   "kv_einsum": {"w": jax.random.normal(next(keys), (2, 1, d, h)) * d**-0.5},
                   "attn_vec_einsum": {"w": jax.random.normal(next(keys), (n, h, d)) * (n * h) ** -0.5}},
          "pre_attention_norm": {"scale": jnp.zeros(d)}, "pre_ffw_norm": {"scale": jnp.zeros(d)},
          "mlp": {"gating_einsum": jax.random.normal(next(keys), (2, d, f)) * d**-0.5,
                  "linear": jax.random.normal(next(keys), (f, d)) * f**-0.5}}
    x = jax.random.normal(next(keys), (1, p, d))
    pos = jnp.arange(p)[None]
    mask = jnp.ones((1, 1, p, p), bool)
    fwd = jax.jit(lambda lp, x: gemma.block(lp, [x], pos, mask, [None], None, [c0]))

    def attribution(lp, x):
        _, _, probs = fwd(lp, x)
        v = decompose.values(lp, x[0], 0, None)
        fv = decompose.head_vectors(lp, v, 0)
        return decompose.contributions(probs[0], fv, x[0], jnp.arange(p), None, chunk=rows_chunk)["alti"]

    t_fwd, _ = _timed(lambda: jax.block_until_ready(fwd(lp, x)))
    t_alti, _ = _timed(lambda: jax.block_until_ready(attribution(lp, x)))
    rec = {"pi0_prefix_layer_forward_s": round(t_fwd, 3), "pi0_prefix_layer_alti_s": round(t_alti, 3),
           "alti_per_layer_x_forward": round(t_alti / t_fwd, 1), "prefix_tokens": p, "chunk": rows_chunk}
    print(json.dumps(rec), flush=True)
    return rec


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=6, help="held-out frames (one per scene)")
    ap.add_argument("--queries", type=int, default=4, help="action query tokens compared (first ones)")
    ap.add_argument("--smoke", action="store_true", help="1 frame, 2 queries")
    ap.add_argument("--pi0-layer", action="store_true", help="time one Pi0-size prefix layer instead")
    a = ap.parse_args(argv)
    if a.pi0_layer:
        return pi0_layer()
    n_frames, n_queries = (1, 2) if a.smoke else (a.frames, a.queries)

    import jax

    from flowlens.analysis.flow import flow
    from flowlens.analysis.rollout import rollout
    from flowlens.attribution import METHODS, contribution_capture
    from flowlens.attribution.methods import flow_over, query_spread
    from flowlens.core.graph import TokenGraph
    from flowlens.model import CaptureConfig, sample_actions
    from flowlens.model.pi0 import Pi0Model
    from flowlens.tasks.tabletop.builtin import load_builtin, load_builtin_norm_stats
    from flowlens.tasks.tabletop.evaluate import held_out_cases
    from flowlens.tasks.tabletop.policy import observe

    config, params, tok = load_builtin("tabletop")
    stats = load_builtin_norm_stats("tabletop")
    model = Pi0Model(config)
    cfg = CaptureConfig(residual=True, query_rows="valid")
    records = []
    for case in held_out_cases(n_frames, render_frames=True):
        views = case.episode.render_frame(case.t)
        obs = observe({c: views[c][0] for c in config.cameras}, case.scene.prompt, case.episode.states[case.t],
                      tok, config, stats)
        rng = jax.random.key(0)
        t_plain, _ = _timed(lambda obs=obs: sample_actions(model, params, obs, rng=rng), repeat=3)
        t_cap, (_, cap) = _timed(lambda obs=obs: sample_actions(model, params, obs, rng=rng, capture=cfg))
        layout = cap.layout
        queries = np.arange(layout.actions.start, layout.actions.start + n_queries)
        rec = {"frame": f"scene {case.scene.seed} t={case.t}", "plain_s": round(t_plain, 4),
               "capture_x": round(t_cap / t_plain, 2)}
        for name in ("norm", "alti", "value_zeroing"):
            t, _ = _timed(lambda name=name: METHODS[name](model, params, None, cap, query=queries[:1],
                                                          steps=range(cap.num_steps)))
            rec[f"{name}_x"] = round(t / t_plain, 1)
        t, _ = _timed(lambda: METHODS["alti_flow"](model, params, None, cap, query=queries[:1]))
        rec["alti_flow_x"] = round(t / t_plain, 1)
        graph = TokenGraph.from_capture(cap, 0, residual=0.5)
        t, _ = _timed(lambda: flow(graph, queries[:1], normalize=True))
        rec["classic_flow_x"] = round(t / t_plain, 1)
        # query discrimination, last layer, step 0
        alti_cap = contribution_capture(model, params, cap, "alti")
        maps = {
            "flow": [graph.to_tokens(_node_values(graph, flow(graph, [q], normalize=True))) for q in queries],
            "alti_flow": [flow_over(alti_cap, np.array([q]), (0,), (cap.num_layers - 1,))[0, 0] for q in queries],
            "rollout": [rollout(graph, [q]).token_scores(cap.num_layers - 1) for q in queries],
            "alti": [METHODS["alti"](model, params, None, cap, query=[q]).values[0, -1] for q in queries],
        }
        for name, m in maps.items():
            rec[f"spread_{name}"] = round(query_spread(np.stack(m), layout.valid), 4)
        records.append(rec)
        print(json.dumps(rec), flush=True)
    summary = {"frames": len(records), "queries": n_queries}
    for key in records[0]:
        if key != "frame":
            vals = np.array([r[key] for r in records], float)
            summary[key] = [round(float(vals.mean()), 4), round(float(vals.std(ddof=1) / np.sqrt(len(vals))), 4)
                            if len(vals) > 1 else 0.0]
    print(json.dumps({"summary": summary}), flush=True)
    return summary


def _node_values(graph, res) -> np.ndarray:
    values = np.zeros(graph.num_nodes)
    values[graph.node_index(res.sources)] = res.values.mean(axis=0)
    return values


if __name__ == "__main__":
    main()
