"""Benchmark: which attention routes does the embedded policy *need* to find the named object?

Run (≈ 1 min for 100 frames on a 2-core CPU):   python benchmarks/bench_routes.py
Smoke (seconds):                                  python benchmarks/bench_routes.py --smoke

The observational maps of ``bench_pointing.py`` say where the action tokens' attention goes; this
script tests routes causally. For held-out reach frames (as in
:mod:`flowlens.tasks.tabletop.evaluate`) it samples the action chunk with attention edges knocked
out (:class:`flowlens.model.knockout.Knockout`: the edges get zero probability, rows renormalise,
in every layer and head, in the prefix pass and every denoising step) and reports how often the
chunk still heads for the object the prompt names:

* ``none``: the unedited model;
* ``actions-x-words`` / ``actions-x-base`` / ``actions-x-wrist`` / ``actions-x-cameras``: the
  action tokens may not read the prompt words / the base camera / the wrist camera / either
  camera (information can still reach them through the other tokens);
* ``words-x-cameras``: the prompt words may not read the images (the prefix cannot ground the
  words in the images);
* ``cameras-x-words``: the image patches may not read the prompt (they cannot know which object
  is named).

The script is a few lines over the sweep API (:func:`flowlens.causal.knockout_sweep` with the
task's :func:`flowlens.causal.heading_score`: one row per frame × knockout, frames batched by
layout, every knockout with the unedited run's noise). Metrics per knockout, as
:func:`flowlens.tasks.tabletop.evaluate.evaluate_policy` defines them: ``accuracy``
(the chunk's heading points at the named object), ``chance`` (a random heading), ``mean_cosine``
with the direction to the named object, and the prompt-swap test (``swap_accuracy``: the prompt
names another object of the scene and the chunk heads for it; ``swap_chance``). One JSON line per
knockout and a summary line; ``--out FILE`` writes them too.
"""

# %%
from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import numpy as np

ROUTES = {
    "none": [],
    "actions-x-words": [("actions", "words")],
    "actions-x-base": [("actions", "base_0_rgb")],
    "actions-x-wrist": [("actions", "left_wrist_0_rgb")],
    "actions-x-cameras": [("actions", ["base_0_rgb", "left_wrist_0_rgb"])],
    "words-x-cameras": [("words", ["base_0_rgb", "left_wrist_0_rgb"])],
    "cameras-x-words": [(["base_0_rgb", "left_wrist_0_rgb"], "words")],
}


def emit(record: dict, sink: list) -> None:
    record["load1"] = round(os.getloadavg()[0], 2)
    sink.append(record)
    print(json.dumps(record), flush=True)


def mean(column) -> float:
    return round(float(np.mean(column.to_numpy())), 4)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=100, help="held-out frames (one per scene)")
    ap.add_argument("--k", type=int, default=5, help="actions summed into the heading")
    ap.add_argument("--out", default=None, help="also write the JSON lines here")
    ap.add_argument("--smoke", action="store_true", help="6 frames")
    a = ap.parse_args(argv)

    from flowlens.causal import case_frames, heading_score, knockout_sweep, load_task
    from flowlens.model.knockout import Knockout
    from flowlens.tasks.tabletop.evaluate import held_out_cases

    model, params, tok, stats = load_task()
    config = model.config
    cases = held_out_cases(6 if a.smoke else a.frames)
    swapped = [c for c in cases if c.swap >= 0]
    routes = {name: [Knockout(query=q, key=k) for q, k in edges] for name, edges in ROUTES.items()}
    t0 = time.time()
    named = knockout_sweep(model, params, case_frames(cases, tok, config, stats), routes,
                           score=heading_score(cases, stats, config, k=a.k))
    swap = knockout_sweep(model, params, case_frames(swapped, tok, config, stats,
                                                     prompts=[c.scene.with_prompt(c.swap).prompt for c in swapped]),
                          routes, score=heading_score(swapped, stats, config, k=a.k, named=[c.swap for c in swapped]))
    out: list[dict] = []
    for name, edges in ROUTES.items():
        r, s = named[named.intervention == name], swap[swap.intervention == name]
        emit({"knockout": name, "edges": [[q, k] for q, k in edges], "frames": len(r),
              "accuracy": mean(r.hit), "chance": mean(r.chance), "mean_cosine": mean(r.cosine_named),
              **({"swap_accuracy": mean(s.hit), "swap_chance": mean(s.chance)} if len(s) else {})}, out)
    emit({"summary": "routes", "frames": len(cases), "seconds": round(time.time() - t0, 1)}, out)
    if a.out:
        pathlib.Path(a.out).write_text("\n".join(json.dumps(r) for r in out) + "\n")
    return out


if __name__ == "__main__":
    main()
