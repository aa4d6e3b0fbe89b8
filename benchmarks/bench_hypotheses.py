"""Worked study: routing hypotheses on the embedded model, observational and causal evidence side by side.

Run (≈ 3–5 min for 200 frames on a 2-core CPU):   python benchmarks/bench_hypotheses.py
Smoke (seconds):                                  python benchmarks/bench_hypotheses.py --smoke

Frames: held-out tabletop reach frames (``flowlens.tasks.tabletop.evaluate.held_out_cases``, one
per scene, never trained on). Each frame is one ``flowlens.hypotheses.Evidence`` on
``builtin:tabletop``: the capture (prefix pass + denoising step 0, every head) gives the
observational measures; knockouts (``flowlens.model.knockout``) sampled from the *same noise* as
the clean run give the causal ones. The behavioural read-out is ``cosine``: the cosine between the
chunk's heading (first 5 actions, task space) and the direction from the gripper to the named
object (1: straight at it). Hypotheses (``obs:`` observational, ``causal:`` interventional):

(a) the named object reaches the actions through the words vs directly from the patches:
    ``obs: actions read words vs patches`` (raw attention mass of the action rows, mean over
    layers, paired), ``obs: rollout of actions, words vs patches`` (their rollout's shares) and ``causal: cutting actions↛words vs actions↛cameras`` (paired cosines);
(b) from which layer on the actions need the wrist camera (sweep over the first knocked layer
    s, layers s–17, Holm): ``causal: actions↛wrist from layer s`` and ``causal: nothing reads the
    wrist from layer s`` (every other token ↛ wrist patches) as the drop of cosine (clean − cut,
    one-sided), beside ``obs: actions' wrist mass from layer s`` vs a uniform row's share;
(c) which heads carry the prompt into the image tokens (sweep over heads, Holm):
    ``obs: head h, image rows on words`` (paired against the head mean) and
    ``causal: cameras↛words in head h`` (drop of cosine);
(d) success vs failure: ``obs: image rows on words, hit vs miss`` (two-sample, frames grouped by
    whether the clean chunk heads for the named object);
(e) activation patching: from which layer on does the named object's identity live in the image
    tokens? ``causal: image residual from the swapped prompt at layer l`` patches both cameras'
    residual stream at the input of prefix layer l (l = 18: the final output) from the run whose
    prompt names another object (same words, ``flowlens.causal.swapped_prompt``) into the clean
    run, and measures the gain of the chunk's cosine towards the *swapped* object (sweep over l,
    one-sided, Holm). Frames whose scene has no other pickable object are left out of (e).

Prints one JSON line per table row and a summary line (seconds, frames, load); ``--out DIR``
writes ``hypotheses.csv`` / ``.parquet`` / ``.png`` / ``.html`` there.
"""

# %%
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

K = 5  # actions summed into the heading
CAMS = ["base_0_rgb", "left_wrist_0_rgb"]
WRIST = "left_wrist_0_rgb"
STARTS = (0, 3, 6, 9, 12, 15)
PATCH_LAYERS = (0, 3, 6, 9, 12, 15, 18)


def knockouts():
    """The interventions, by name (lists of Knockout)."""
    from flowlens.model.knockout import Knockout

    not_wrist = ["base_0_rgb", "bos", "words", "newline", "actions"]
    out = {"cut actions-words": [Knockout("actions", "words")], "cut actions-cameras": [Knockout("actions", CAMS)]}
    for s in STARTS:
        out[f"actions-wrist from {s}"] = [Knockout("actions", WRIST, layers=range(s, 18))]
        out[f"all-wrist from {s}"] = [Knockout(not_wrist, WRIST, layers=range(s, 18))]
    for h in range(8):
        out[f"cameras-words head {h}"] = [Knockout(CAMS, "words", heads=[h])]
    return out


def cosine(ev, kos=(), *, chunk=None, to: str = "target_xy") -> float:
    """Cosine between the chunk's heading (default: ``ev.actions(kos)``) and the direction to the
    named object (``to="swap_xy"``: to the object the swapped prompt names)."""
    heading = (ev.actions(kos) if chunk is None else chunk)[:K, :2].sum(axis=0)
    d = ev.labels[to] - ev.labels["gripper_xy"]
    return float(d @ heading / (np.linalg.norm(d) * np.linalg.norm(heading) + 1e-12))


def patch_sites():
    """Both cameras' residual stream at the input of prefix layer l (18: the final output)."""
    from flowlens.causal import PatchSite

    return {la: PatchSite(layer=la, step="prefix", tokens=CAMS, label="cameras") for la in PATCH_LAYERS}


def patching_hypothesis(sites: dict):
    """(e) in a few lines: the gain of cosine towards the swapped object when the image tokens'
    residual at layer l comes from the swapped-prompt run."""
    from flowlens.hypotheses import Hypothesis

    def gain(ev, la):
        src = ev.labels.get("swapped")
        if src is None:  # no other pickable object: (e) does not apply to this frame
            return None
        return cosine(ev, chunk=ev.patched(src, sites[la]), to="swap_xy") - cosine(ev, to="swap_xy")

    return Hypothesis("causal: image residual from the swapped prompt at layer l", gain, null=0.0,
                      sweep=PATCH_LAYERS, alternative="greater",
                      description="(e) gain of cosine towards the swapped object, both cameras' residual at prefix "
                                  "layer l patched from the swapped-prompt run")


def hypotheses(ko: dict, heads: int):
    from flowlens.hypotheses import Hypothesis, mass, rollout_share

    def heads_graph(ev):
        return ev.graph(heads="keep", config=ev.labels["config"])

    def mean_graph(ev):
        return ev.graph(config=ev.labels["config"])

    def wrist_mass(ev, s):
        return mass(mean_graph(ev), "actions", WRIST, layers=range(s, 18))

    def uniform_wrist(ev, s):
        lay = ev.layout
        return len(lay.select(group=WRIST)) / int(lay.valid.sum())

    def head_on_words(ev, h):
        per_head = mass(heads_graph(ev), CAMS, "words")  # [head]
        return {"head": float(per_head[h]), "head mean": float(per_head.mean())}

    drop = lambda name: (lambda ev, s: cosine(ev) - cosine(ev, ko[name.format(s)]))  # noqa: E731
    return [
        Hypothesis("obs: actions read words vs patches",
                   lambda ev: {"words": mass(mean_graph(ev), "actions", "words"),
                               "patches": mass(mean_graph(ev), "actions", CAMS)}, compare=("words", "patches"),
                   description="(a) raw attention mass of the action rows, mean over layers and heads"),
        Hypothesis("obs: rollout of actions, words vs patches",
                   lambda ev: {"words": rollout_share(mean_graph(ev), "actions", "words"),
                               "patches": rollout_share(mean_graph(ev), "actions", CAMS)},
                   compare=("words", "patches"),
                   description="(a) share of the action rows' rollout (18 layers, residual 0.5) on each"),
        Hypothesis("causal: cut actions-words vs actions-cameras",
                   lambda ev: {"words cut": cosine(ev, ko["cut actions-words"]),
                               "cameras cut": cosine(ev, ko["cut actions-cameras"])},
                   compare=("words cut", "cameras cut"),
                   prefetch=lambda v: [ko["cut actions-words"], ko["cut actions-cameras"]],
                   description="(a) cosine to the named object with each route cut (higher: the route is needed less)"),
        Hypothesis("obs: actions' wrist mass from layer s", wrist_mass, null=uniform_wrist, sweep=STARTS,
                   description="(b) raw mass of the action rows on the wrist patches, layers s-17, vs a uniform row"),
        Hypothesis("causal: actions-wrist cut from layer s", drop("actions-wrist from {}"), null=0.0,
                   sweep=STARTS, alternative="greater", prefetch=lambda s: [ko[f"actions-wrist from {s}"]],
                   description="(b) drop of cosine when the action rows may not read the wrist patches in layers s-17"),
        Hypothesis("causal: nothing reads the wrist from layer s", drop("all-wrist from {}"), null=0.0,
                   sweep=STARTS, alternative="greater", prefetch=lambda s: [ko[f"all-wrist from {s}"]],
                   description="(b) drop of cosine when no other token may read the wrist patches in layers s-17"),
        Hypothesis("obs: head h, image rows on words", head_on_words, compare=("head", "head mean"),
                   sweep=range(heads), description="(c) raw mass of the image rows on the words, mean over layers"),
        Hypothesis("causal: cameras-words cut in head h", drop("cameras-words head {}"), null=0.0,
                   sweep=range(heads), alternative="greater", prefetch=lambda h: [ko[f"cameras-words head {h}"]],
                   description="(c) drop of cosine when the image rows may not read the words in head h (all layers)"),
        Hypothesis("obs: image rows on words, hit vs miss", lambda ev: mass(mean_graph(ev), CAMS, "words"),
                   by="hit", groups=(True, False),
                   description="(d) success vs failure: frames whose clean chunk heads for the named object vs not"),
    ]


def evidences(n: int, backend):
    from flowlens.causal import swapped_prompt
    from flowlens.hypotheses import Evidence, prefetch_actions
    from flowlens.model import CaptureConfig
    from flowlens.tasks.tabletop.evaluate import held_out_cases, pointed_object
    from flowlens.tasks.tabletop.policy import observe

    cfg = backend.config
    config = CaptureConfig(steps=(0,), query_rows="valid", heads=None, image_norms=False)
    evs = []
    for i, case in enumerate(held_out_cases(n)):
        views = case.episode.render_frame(case.t)
        obs = observe({c: views[c][0] for c in cfg.cameras}, case.scene.prompt, case.episode.states[case.t],
                      backend.tokenizer, cfg, backend.norm_stats)
        st, xy = case.episode.states[case.t], case.episode.object_xy[case.t]
        labels = {"gripper_xy": st[:2], "target_xy": xy[case.scene.source], "object_xy": xy, "state": st,
                  "named": case.scene.source, "config": config, "swappable": case.swap >= 0}
        key = f"scene{case.scene.seed}/t{case.t}"
        if case.swap >= 0:  # the corrupted input of (e): the same frame, the prompt naming another object
            swap = observe({c: views[c][0] for c in cfg.cameras}, swapped_prompt(case), st, backend.tokenizer, cfg,
                           backend.norm_stats)
            labels.update(swapped=Evidence(key + "/swap", backend, observation=swap, stream=i),
                          swap_xy=xy[case.swap])
        evs.append(Evidence(key, backend, observation=obs, labels=labels, stream=i))
    prefetch_actions(evs, ())
    for ev in evs:
        heading = ev.actions()[:K, :2].sum(axis=0)
        ev.labels["hit"] = pointed_object(heading, ev.labels["state"], ev.labels["object_xy"]) == ev.labels["named"]
    return evs


def main(argv: list[str] | None = None) -> list[dict]:
    flags = {
        "--frames": {"type": int, "default": 200, "help": "held-out frames (one per scene)"},
        "--resamples": {"type": int, "default": 9999, "help": "bootstrap / permutation resamples"},
        "--out": {"default": None, "help": "folder for the table, figure and HTML"},
        "--smoke": {"action": "store_true", "help": "12 frames, 999 resamples"},
    }
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for flag, kw in flags.items():
        ap.add_argument(flag, **kw)
    a = ap.parse_args(argv)
    n, resamples = (12, 999) if a.smoke else (a.frames, a.resamples)

    from flowlens.hypotheses import evaluate, prefetch_patched
    from flowlens.pipeline.backends import load_backend

    t0 = time.time()
    loads = [os.getloadavg()[0]]
    backend = load_backend("builtin:tabletop")
    evs = evidences(n, backend)
    t_clean = time.time() - t0
    hs = hypotheses(knockouts(), backend.num_heads)
    sites = patch_sites()
    swappable = [ev for ev in evs if ev.labels["swappable"]]
    t_patch = time.time()
    prefetch_patched(swappable, [ev.labels["swapped"] for ev in swappable], list(sites.values()))
    t_patch = time.time() - t_patch
    hs.insert(len(hs) - 1, patching_hypothesis(sites))
    misses = sum(not ev.labels["hit"] for ev in evs)
    if min(misses, n - misses) < 2:  # (d) needs two frames in each group
        print(json.dumps({"skipped": hs[-1].name, "misses": misses, "frames": n}), flush=True)
        hs = hs[:-1]
    result = evaluate(hs, evs, n_resamples=resamples, progress=False)
    loads.append(os.getloadavg()[0])
    records = []
    for row in result.table.to_dict("records"):
        rec = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k != "description"}
        records.append(rec)
        print(json.dumps(rec), flush=True)
    hits = float(np.mean([ev.labels["hit"] for ev in evs]))
    summary = {"summary": "hypotheses", "frames": n, "hit_rate": round(hits, 3),
               "clean_seconds": round(t_clean, 1), "patch_seconds": round(t_patch, 1),
               "patched_frames": len(swappable), "seconds": round(time.time() - t0, 1),
               "load1_start_end": [round(x, 2) for x in loads], "cpus": os.cpu_count()}
    print(json.dumps(summary), flush=True)
    if a.out:
        from flowlens.hypotheses.runner import write_outputs

        paths = write_outputs(result.table, result.values, a.out, title=f"Routing hypotheses, {n} held-out frames")
        print(json.dumps({"wrote": {k: str(v) for k, v in paths.items()}}), flush=True)
    return records + [summary]


if __name__ == "__main__":
    main()
