"""Benchmark: which token-attribution method should one trust on a VLA? Deletion / insertion through the model.

Run (≈ 10–15 min for 200 frames on a 2-core CPU):   python benchmarks/bench_faithfulness.py
Smoke (seconds):                                     python benchmarks/bench_faithfulness.py --smoke

Model ``builtin:tabletop``; frames: held-out reach frames (``evaluate.held_out_cases``, never
trained on), where the action chunk heads for the object the prompt names. Each method scores the
*input* tokens (the valid image patches of both cameras and the prompt tokens) for the action
tokens:

* ``raw`` (last-layer attention of the action tokens, heads averaged), ``rollout`` (Abnar &
  Zuidema, r = 0.5), ``flow`` (exact attention flow) — from the captured attention of the last
  denoising step, as ``bench_pointing.py``;
* ``relevancy`` (Chefer et al. 2021) and ``ig`` (Integrated Gradients on the prefix embeddings,
  mean baseline, ``--ig-steps`` uniform intervals plus ``--ig-refine`` points where the
  target changes most; its completeness error is reported) — gradients of the target *heading towards the named
  object*: the first 5 actions' plane displacement (task space, through the norm stats'
  unnormalisation) projected on the unit direction from the gripper to the named object;
* ``random``: a random order (the reference every method must beat);
* every capture-based method of the registry ``flowlens.attribution.METHODS`` (norm, ALTI,
  value zeroing, ALTI flow), on a capture with the residual stream and
  every head, at the last denoising step.

Removal is *deletion from the sequence*: with :class:`flowlens.model.knockout.Knockout` no token
(in any layer or head, in the prefix pass and every denoising step) may read a removed token, so
its information reaches the actions by no route (knocking out only the action tokens' edges would
leave the routes through the other prefix tokens open). Per frame and method, for k in ``--ks``:

* deletion: remove the top-k tokens; ``chunk_change`` = RMS over the task-space chunk of the
  change from the full-input chunk, ``success`` = the chunk still points at the named object
  (``evaluate.headings`` / ``pointed_object``, first 5 actions);
* insertion: remove every input token except the top-k.

AOPC (mean over the ks) per frame: deletion ``del_chunk`` = mean change, ``del_success`` = mean
drop in success; insertion ``ins_chunk`` = mean of (change with nothing kept − change with the
top-k kept), ``ins_success`` = mean gain over nothing kept. Higher is more faithful for all four.
Means with 95 % bootstrap CIs (``scipy.stats.bootstrap``, BCa, over frames) and the paired
difference to ``random``. Also: the pointing game (the top image patch overlaps the named
object's mask; chance = the share of patches that do) and agreement with causal knockout routes
(the group — prompt words, base camera, wrist camera — with the largest share of the method's
|score| mass is the one whose removal from the action tokens' keys, as ``bench_routes.py``, moves
the chunk most; chance 1/3). Cost: median seconds per frame of each method next to one plain
``sample_actions`` in the same run. One JSON line per method, then a ranking table.
"""

# %%
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from bench_pointing import emit, load_model, maps_for, patch_hits, patch_valid  # noqa: E402

HEADING_K = 5
OPTIONS = [  # flag, type, default, help
    ("--frames", int, 200, "held-out frames (one per scene)"),
    ("--ks", str, "1,3,6,12", "numbers of tokens removed / kept"),
    ("--ig-steps", int, 16, "Integrated Gradients uniform path intervals"),
    ("--ig-refine", int, 16, "extra IG path points where the target changes most"),
    ("--out", str, None, "also write the JSON lines here"),
]
ROUTE_GROUPS = ("words", "base_0_rgb", "left_wrist_0_rgb")


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


class Frame:
    """One held-out frame: observation, noise, full-input chunk, what the metrics need."""

    def __init__(self, case, model, params, tok, stats, noise):
        from flowlens.tasks.tabletop.policy import observe

        ep, t = case.episode, case.t
        cfg = model.config
        views = ep.render_frame(t)
        self.obs = observe({c: views[c][0] for c in cfg.cameras}, case.scene.prompt, ep.states[t], tok, cfg, stats)
        self.case, self.model, self.params, self.stats, self.noise = case, model, params, stats, noise
        self.layout = model.layout(self.obs)
        self.state, self.xy, self.named = ep.states[t], ep.object_xy[t], case.scene.source
        lay = self.layout
        self.candidates = np.flatnonzero(lay.valid[: lay.prefix_len])  # valid patches + prompt tokens
        self.all_tokens = np.arange(lay.n)
        self.chunk0, self.plain_seconds = timed(self.chunk, None)
        self.success0 = self.success(self.chunk0)

    def chunk(self, knockouts):
        from flowlens.model.norm_stats import unnormalize
        from flowlens.model.sampler import sample_actions
        from flowlens.tasks.tabletop.expert import ACTION_DIM

        actions, _ = sample_actions(self.model, self.params, self.obs, noise=self.noise, knockouts=knockouts)
        return unnormalize(actions[0, :, :ACTION_DIM], self.stats["actions"], quantile=self.model.config.pi05)

    def success(self, chunk) -> float:
        from flowlens.tasks.tabletop.evaluate import headings, pointed_object

        return float(pointed_object(headings(chunk[None], HEADING_K)[0], self.state, self.xy) == self.named)

    def change(self, chunk) -> float:
        return float(np.sqrt(np.mean((chunk - self.chunk0) ** 2)))

    def without(self, removed):
        from flowlens.model.knockout import Knockout

        removed = np.asarray(removed, np.int64)
        if removed.size == 0:
            return self.chunk0
        return self.chunk([Knockout(query=self.all_tokens, key=removed)])

    def target(self):
        """ActionTarget: heading of the first HEADING_K actions towards the named object (model space)."""
        from flowlens.model.gradients import ActionTarget
        from flowlens.model.norm_stats import unnormalize

        u = self.xy[self.named] - self.state[:2]
        u = u / max(np.linalg.norm(u), 1e-12)
        ones, zeros = np.ones((1, 2)), np.zeros((1, 2))
        quantile = self.model.config.pi05
        scale = (unnormalize(ones, self.stats["actions"], quantile=quantile)
                 - unnormalize(zeros, self.stats["actions"], quantile=quantile))[0]  # d task / d model, dims 0, 1
        return ActionTarget.heading(scale * u, HEADING_K)


def method_scores(frame: Frame, flow_fn, ig_steps: int, ig_refine: int, extra: dict) -> tuple[dict, dict]:
    """Token scores [n] of every method and the seconds each took (capture / gradients included)."""
    from flowlens.attribution import chefer_relevancy, integrated_gradients
    from flowlens.model.capture_config import CaptureConfig
    from flowlens.model.gradients import attention_gradients, path_gradients
    from flowlens.model.sampler import sample_actions

    m, p, obs, noise = frame.model, frame.params, frame.obs, frame.noise
    (_, capture), cap_s = timed(sample_actions, m, p, obs, noise=noise, capture=CaptureConfig(heads="mean",
                                                                                              image_norms=False))
    scores, seconds = {}, {}
    t0 = time.perf_counter()
    maps = maps_for(capture, -1, None)
    seconds["raw"] = seconds["rollout"] = cap_s + (time.perf_counter() - t0) / 2
    scores.update(raw=maps["raw"], rollout=maps["rollout"])
    if flow_fn is not None:
        from flowlens.analysis.flow import flow
        from flowlens.core.graph import TokenGraph

        t0 = time.perf_counter()
        graph = TokenGraph.from_capture(capture, -1, heads="mean", residual=0.5)
        res = flow(graph, kind="action")
        scores["flow"] = graph.to_tokens(res.values.mean(axis=0))
        seconds["flow"] = cap_s + time.perf_counter() - t0
    target = frame.target()
    t0 = time.perf_counter()
    grads = attention_gradients(m, p, obs, target, noise=noise)
    scores["relevancy"] = chefer_relevancy(grads).token_scores()
    seconds["relevancy"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ig = integrated_gradients(path_gradients(m, p, obs, target, noise=noise, steps=ig_steps, batch=ig_steps + 1,
                                             refine=ig_refine))
    scores["ig"] = ig.token_scores
    seconds["ig"] = time.perf_counter() - t0
    frame.ig_completeness = ig.completeness_error
    if extra:  # value-based methods read the residual stream and every head
        (_, full), full_s = timed(sample_actions, m, p, obs, noise=noise,
                                  capture=CaptureConfig(residual=True, image_norms=False))
        last = full.step_ids[-1]
        for name, method in extra.items():
            t0 = time.perf_counter()
            res = method(m, p, obs, full, query="actions", steps=(last,))
            scores[name] = np.asarray(res.values, np.float64)[0, -1]
            seconds[name] = full_s + time.perf_counter() - t0
    return scores, seconds


def order_of(frame: Frame, scores: np.ndarray) -> np.ndarray:
    """Candidate tokens, highest score first (NaN last; ties broken by token index)."""
    s = np.nan_to_num(np.asarray(scores, np.float64)[frame.candidates], nan=-np.inf)
    return frame.candidates[np.argsort(-s, kind="stable")]


def curves(frame: Frame, order: np.ndarray, ks, empty_change: float, empty_success: float) -> dict:
    dele = [frame.without(order[:k]) for k in ks]
    ins = [frame.without(order[k:]) for k in ks]
    return {
        "del_chunk": float(np.mean([frame.change(c) for c in dele])),
        "del_success": float(np.mean([frame.success0 - frame.success(c) for c in dele])),
        "ins_chunk": float(np.mean([empty_change - frame.change(c) for c in ins])),
        "ins_success": float(np.mean([frame.success(c) - empty_success for c in ins])),
        "del_curve": [frame.change(c) for c in dele],
        "ins_curve": [frame.change(c) for c in ins],
    }


def pointing(frame: Frame, scores: np.ndarray) -> tuple[float, float]:
    """(hit, chance): the top image patch of either camera overlaps the named object's mask."""
    from flowlens.projection.image import camera_segment

    ep, t = frame.case.episode, frame.case.t
    best, hit, hits_all = -np.inf, False, []
    for cam in frame.model.config.cameras:
        seg = camera_segment(frame.layout, cam)
        idx = frame.layout.select(kind="image", camera=cam)
        hits = patch_hits(seg, ep.masks[cam][t][frame.named])
        valid = patch_valid(seg) & frame.layout.valid[idx]
        hits_all.extend(hits[valid].tolist())
        s = np.where(valid, np.nan_to_num(scores[idx], nan=-np.inf), -np.inf)
        if s.max() > best:
            best, hit = s.max(), bool(hits[int(np.argmax(s))])
    return float(hit), float(np.mean(hits_all))


def route_effects(frame: Frame) -> np.ndarray:
    """Chunk change when the action tokens may not read each route group (``bench_routes.py``)."""
    from flowlens.model.knockout import Knockout

    return np.array([frame.change(frame.chunk([Knockout(query="actions", key=g)])) for g in ROUTE_GROUPS])


def group_shares(frame: Frame, scores: np.ndarray) -> np.ndarray:
    groups = frame.layout.groups()
    mass = np.abs(np.nan_to_num(scores))
    return np.array([mass[groups[g]].sum() for g in ROUTE_GROUPS])


def ci(values, rng_seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of a 95 % BCa bootstrap CI over frames (percentile when BCa is degenerate)."""
    from scipy.stats import bootstrap

    v = np.asarray(values, np.float64)
    if v.size < 3 or np.ptp(v) == 0:
        return float(v.mean()), float(v.mean()), float(v.mean())
    res = bootstrap((v,), np.mean, confidence_level=0.95, n_resamples=2000, method="BCa",
                    random_state=np.random.default_rng(rng_seed))
    lo, hi = res.confidence_interval
    if not (np.isfinite(lo) and np.isfinite(hi)):
        res = bootstrap((v,), np.mean, confidence_level=0.95, n_resamples=2000, method="percentile",
                        random_state=np.random.default_rng(rng_seed))
        lo, hi = res.confidence_interval
    return float(v.mean()), float(lo), float(hi)


def extra_methods() -> dict:
    """The capture-based methods of the registry ``flowlens.attribution.METHODS`` (norm, ALTI, value
    zeroing, ALTI flow): name → method called as ``method(model, params, obs, capture, query=...,
    steps=(step,))`` returning ``.values`` [step, layer, token]. The registry's gradient methods
    (relevancy, ig) are run here directly, with the task's heading target and IG's refined path."""
    try:
        from flowlens.attribution import METHODS
    except ImportError:
        return {}
    return {name: m for name, m in METHODS.items() if "gradient" not in getattr(m, "needs", ("gradient",))}


def pi0_memory(name: str = "pi0") -> dict:
    """XLA's memory estimate (compiled on abstract shapes, nothing allocated) of one plain sample and
    of ``attention_gradients`` (all maps of the prefix pass and 10 steps) for a full-size model."""
    import jax
    import jax.numpy as jnp

    from flowlens.model import Pi0Model, gemma
    from flowlens.model.gradients import _value_and_grads_jit
    from flowlens.model.sampler import _Plan, _sample_impl

    model = Pi0Model(name)
    cfg = model.config
    sds = jax.ShapeDtypeStruct
    s, p, t_s, L, N = cfg.siglip.image_size, cfg.prefix_len, cfg.suffix_len, cfg.num_layers, cfg.num_heads
    params = model.param_shapes()
    if cfg.dtype == "bfloat16":  # weights stored in the compute dtype, as a served checkpoint
        params = jax.tree.map(lambda a: sds(a.shape, jnp.bfloat16), params)
    arrays = (tuple(sds((1, s, s, 3), jnp.float32) for _ in cfg.cameras), sds((1, len(cfg.cameras)), jnp.bool_),
              sds((1, cfg.action_dim), jnp.float32), sds((1, cfg.max_token_len), jnp.int32),
              sds((1, cfg.max_token_len), jnp.bool_))
    noise = sds((1, cfg.action_horizon, cfg.action_dim), jnp.float32)
    steps = cfg.num_steps
    plain = _sample_impl.lower(params, arrays, noise, None, None, model=model,
                               plan=_Plan(steps, None, None, (-1,) * steps, None)).compile().memory_analysis()
    layers = tuple(range(L))
    plan = _Plan(steps, gemma.LayerCapture(layers, tuple(range(p)), 0, None),
                 gemma.LayerCapture(layers, tuple(range(t_s)), 0, None), tuple(range(steps)), None)
    offsets = {"prefix": sds((L, 1, N, p, p), jnp.float32), "steps": sds((steps, L, 1, N, t_s, p + t_s), jnp.float32)}
    grad = _value_and_grads_jit.lower(params, arrays, noise, sds((cfg.action_horizon, cfg.action_dim), jnp.float32),
                                      offsets, model=model, plan=plan, step=None).compile().memory_analysis()
    gib = 2.0**30

    def sizes(m):
        return {"arguments_gib": round(m.argument_size_in_bytes / gib, 2),
                "outputs_gib": round(m.output_size_in_bytes / gib, 2),
                "temporaries_gib": round(m.temp_size_in_bytes / gib, 2)}

    return {"memory": name, "dtype": cfg.dtype, "plain_sample": sizes(plain), "attention_gradients": sizes(grad)}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for flag, kind, default, text in OPTIONS:
        ap.add_argument(flag, type=kind, default=default, help=text)
    ap.add_argument("--smoke", action="store_true", help="3 frames, ks 1,6, IG 4 + 4 path points")
    ap.add_argument("--pi0-memory", action="store_true", help="only print XLA's memory estimate at Pi0 scale")
    a = ap.parse_args(argv)
    if a.pi0_memory:
        rec = pi0_memory()
        print(json.dumps(rec))
        return [rec]
    n_frames = 3 if a.smoke else a.frames
    ks = [1, 6] if a.smoke else [int(k) for k in a.ks.split(",")]
    ig_steps, ig_refine = (4, 4) if a.smoke else (a.ig_steps, a.ig_refine)

    from flowlens.tasks.tabletop.evaluate import held_out_cases

    try:
        from flowlens.analysis.flow import flow as flow_fn
    except ImportError:  # pragma: no cover
        flow_fn = None
    model, params, tok, stats = load_model(None)
    cfg = model.config
    extra = extra_methods()
    cases = held_out_cases(n_frames, render_frames=True)
    rng = np.random.default_rng(0)
    rows: dict[str, dict[str, list]] = {}
    plain, completeness = [], []
    t_start = time.time()
    for i, case in enumerate(cases):
        noise = rng.standard_normal((1, cfg.action_horizon, cfg.action_dim)).astype(np.float32)
        frame = Frame(case, model, params, tok, stats, noise)
        if i == 0:  # compile every program once outside the timings
            method_scores(frame, flow_fn, ig_steps, ig_refine, extra)
            frame = Frame(case, model, params, tok, stats, noise)
        plain.append(frame.plain_seconds)
        scores, seconds = method_scores(frame, flow_fn, ig_steps, ig_refine, extra)
        completeness.append(frame.ig_completeness)
        scores["random"] = np.full(frame.layout.n, np.nan)
        scores["random"][frame.candidates] = rng.permutation(frame.candidates.size).astype(np.float64)
        seconds["random"] = 0.0
        empty = frame.without(frame.candidates)
        empty_change, empty_success = frame.change(empty), frame.success(empty)
        effects = route_effects(frame)
        for name, s in scores.items():
            r = rows.setdefault(name, {})
            for key, v in curves(frame, order_of(frame, s), ks, empty_change, empty_success).items():
                r.setdefault(key, []).append(v)
            hit, chance = pointing(frame, s)
            r.setdefault("pointing", []).append(hit)
            r.setdefault("pointing_chance", []).append(chance)
            r.setdefault("route_agree", []).append(float(np.argmax(group_shares(frame, s)) == np.argmax(effects)))
            r.setdefault("seconds", []).append(seconds[name])
        if (i + 1) % 25 == 0:
            print(f"# {i + 1}/{len(cases)} frames, {time.time() - t_start:.0f} s", file=sys.stderr, flush=True)
    out: list[dict] = []
    plain_s = float(np.median(plain))
    for name, r in rows.items():
        rec = {"method": name, "frames": len(cases), "ks": ks}
        for key in ("del_chunk", "del_success", "ins_chunk", "ins_success", "pointing", "route_agree"):
            rec[key] = [round(x, 4) for x in ci(r[key])]
            if name != "random":
                diff = np.asarray(r[key]) - np.asarray(rows["random"][key])
                rec[key + "_vs_random"] = [round(x, 4) for x in ci(diff)]
        rec["pointing_chance"] = round(float(np.mean(r["pointing_chance"])), 4)
        rec["del_curve"] = [round(float(x), 4) for x in np.mean(r["del_curve"], axis=0)]
        rec["ins_curve"] = [round(float(x), 4) for x in np.mean(r["ins_curve"], axis=0)]
        rec["seconds"] = round(float(np.median(r["seconds"])), 4)
        rec["cost_vs_sample"] = round(float(np.median(r["seconds"])) / plain_s, 2)
        emit(rec, out)
    emit({"summary": "faithfulness", "frames": len(cases), "ks": ks, "ig_steps": ig_steps, "ig_refine": ig_refine,
          "ig_completeness_error_median": round(float(np.median(completeness)), 5),
          "ig_completeness_error_max": round(float(np.max(completeness)), 5),
          "plain_sample_seconds": round(plain_s, 4), "seconds": round(time.time() - t_start, 1)}, out)
    print(ranking_table(out))
    if a.out:
        pathlib.Path(a.out).write_text("\n".join(json.dumps(r) for r in out) + "\n")
    return out


def ranking_table(records: list[dict]) -> str:
    """Markdown table, methods ranked by deletion AOPC (chunk change), with 95 % CIs."""
    def cell(v):
        return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"

    meth = sorted((r for r in records if "method" in r), key=lambda r: -r["del_chunk"][0])
    lines = ["| rank | method | deletion AOPC chunk | Δ vs random | deletion AOPC success | insertion AOPC chunk "
             "| insertion AOPC success | pointing (chance) | route agreement (chance 0.33) | cost × sample |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(meth, 1):
        vs = cell(r["del_chunk_vs_random"]) if "del_chunk_vs_random" in r else "–"
        lines.append(f"| {i} | {r['method']} | {cell(r['del_chunk'])} | {vs} | {cell(r['del_success'])} | "
                     f"{cell(r['ins_chunk'])} | {cell(r['ins_success'])} | {cell(r['pointing'])} "
                     f"({r['pointing_chance']:.2f}) | {cell(r['route_agree'])} | {r['cost_vs_sample']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
