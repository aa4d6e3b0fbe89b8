"""Benchmark: the cost of an activation-patching sweep relative to plain sampling (embedded model).

Run (≈ 1 min on a 2-core CPU):   python benchmarks/bench_patching.py
Smoke (seconds):                   python benchmarks/bench_patching.py --smoke

Clean frames are held-out reach frames; each corrupted frame is a later frame (t + 3) of the same
episode (same prompt, so the same token layout: patching needs position-aligned runs). It times
plain batched ``sample_actions`` on the clean frames, then :func:`flowlens.causal.patch_sweep`
over residual sites (every layer's input of the base camera's patches in the prefix pass) and
reports seconds per site relative to one plain pass, plus the sweep's mean ``gap_closed`` per
layer (how much of the later frame's effect the base camera's residual at that layer carries).
One JSON line per measurement.
"""

# %%
from __future__ import annotations

import argparse
import json
import os
import time


def emit(record: dict) -> None:
    record["load1"] = round(os.getloadavg()[0], 2)
    print(json.dumps(record), flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=16, help="held-out frames (one per scene)")
    ap.add_argument("--smoke", action="store_true", help="4 scenes, 3 layers")
    a = ap.parse_args(argv)

    from flowlens.causal import case_frames, load_task, patch_sites, patch_sweep
    from flowlens.causal.batching import frame_noise, stack
    from flowlens.model import sample_actions
    from flowlens.tasks.tabletop.evaluate import held_out_cases

    model, params, tok, stats = load_task()
    config = model.config
    cases = held_out_cases(4 if a.smoke else a.frames)
    clean = case_frames(cases, tok, config, stats)
    corrupt = case_frames(cases, tok, config, stats, offset=3)
    n = len(clean)
    layers = range(3) if a.smoke else range(config.num_layers + 1)
    sites = patch_sites(layers, steps=["prefix"], tokens={"base": "base_0_rgb"})
    noise = frame_noise(config, n)
    obs = stack(clean, n)
    sample_actions(model, params, obs, noise=noise)  # compile
    t0 = time.perf_counter()
    reps = 3
    for _ in range(reps):
        sample_actions(model, params, obs, noise=noise)
    plain = (time.perf_counter() - t0) / reps
    emit({"measure": "plain sample_actions", "frames": n, "seconds": round(plain, 3)})
    patch_sweep(model, params, clean, corrupt, sites[:1], noise=noise, batch_size=n)  # compile
    t0 = time.perf_counter()
    table = patch_sweep(model, params, clean, corrupt, sites, noise=noise, batch_size=n)
    sweep = time.perf_counter() - t0
    emit({"measure": "patch_sweep", "frames": n, "sites": len(sites), "seconds": round(sweep, 3),
          "seconds_per_site": round(sweep / len(sites), 3),
          "per_site_over_plain": round(sweep / len(sites) / plain, 2),
          "sweep_over_plain": round(sweep / plain, 2)})
    by_layer = table.groupby("layer").gap_closed.mean().round(3)
    emit({"measure": "gap_closed by layer (base camera, prefix)", **{str(k): float(v) for k, v in by_layer.items()}})


if __name__ == "__main__":
    main()
