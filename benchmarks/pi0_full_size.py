"""Full-size Pi0 (3.24 B parameters, random weights, bf16) on whatever JAX runs on (CPU or GPU).

    python benchmarks/pi0_full_size.py                          # pi0_libero, capture action rows, 10 steps
    python benchmarks/pi0_full_size.py --capture all,actions,all_mean --repeats 5   # on a GPU
    python benchmarks/pi0_full_size.py --config pi05_libero --steps 2
    python benchmarks/pi0_full_size.py --smoke                  # the `dummy` variant (So400m + tiny Gemma)

Not run in CI: it needs ~8 GB of memory (parameters in bfloat16 ≈ 6.5 GB) and minutes of CPU.
Random weights (SigLIP head not zero-initialised) exercise exactly the shapes, masks and cache
of the real model; numbers are about the machine, not about a policy. Prints one JSON line per
phase: init, the first (compiling) call of the plain sampler and of each capture setting, then
``--repeats`` rounds in which the plain sampler and every capture setting run interleaved (each
keeps its fastest run; ``ratio_vs_plain`` compares fastest to fastest, so a load change hits all
alike), and the capture's sizes per pass. Timed calls include the device-to-host transfer of the
actions and of the Capture (``sample_actions`` returns numpy arrays).
"""

# %%
from __future__ import annotations

import argparse
import json
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from flowlens.model import CaptureConfig, Observation, Pi0Model, get_config, sample_actions

CAPTURES = {"none": None, "actions": CaptureConfig.actions_only(), "all": CaptureConfig(),
            "all_mean": CaptureConfig(heads="mean")}


def rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)


def emit(**row) -> None:
    print(json.dumps({"bench": "pi0_full_size", "backend": jax.default_backend(), **row, "peak_rss_gb": rss_gb()}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="pi0_libero")
    ap.add_argument("--capture", default="actions",
                    help=f"comma list of capture settings: {', '.join(CAPTURES)}")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved timed rounds after the first calls")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--skip-plain", action="store_true", help="do not time the sampler without capture")
    ap.add_argument("--smoke", action="store_true", help="the dummy variant, 2 steps")
    args = ap.parse_args()
    if args.smoke:
        args.config, args.steps = "dummy", 2
    cfg = get_config(args.config).replace(dtype="bfloat16")
    model = Pi0Model(cfg, image_head_zeroinit=False)

    t0 = time.perf_counter()
    params = jax.block_until_ready(model.init(jax.random.key(0), param_dtype=jnp.bfloat16))
    count = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    emit(phase="init", config=cfg.name, params=count, seconds=round(time.perf_counter() - t0, 1))

    rng = np.random.default_rng(0)
    s = cfg.siglip.image_size
    images = {c: rng.uniform(-1, 1, (1, s, s, 3)).astype(np.float32) for c in cfg.cameras}
    masks = {c: np.array([c != "right_wrist_0_rgb"]) for c in cfg.cameras}  # LIBERO: third camera masked
    tokens = np.zeros((1, cfg.max_token_len), np.int32)
    tokens[0, :12] = [2] + list(range(1000, 1010)) + [108]
    state = rng.normal(size=(1, cfg.action_dim)).astype(np.float32)
    obs = Observation(images, masks, state, tokens, tokens != 0)
    noise = rng.normal(size=(1, cfg.action_horizon, cfg.action_dim)).astype(np.float32)

    settings = [x for x in args.capture.split(",") if x]
    unknown = [x for x in settings if x not in CAPTURES]
    if unknown:
        ap.error(f"unknown --capture {unknown}: choose from {list(CAPTURES)}")
    runs = {} if args.skip_plain else {"plain": None}
    runs.update({x: CAPTURES[x] for x in settings if CAPTURES[x] is not None})

    def call(capture):
        t0 = time.perf_counter()
        actions, cap = sample_actions(model, params, obs, noise=noise, num_steps=args.steps, capture=capture)
        return time.perf_counter() - t0, actions, cap

    caps = {}
    for name, capture in runs.items():  # first calls: compile + run
        seconds, actions, caps[name] = call(capture)
        emit(phase=f"{name}_compile_and_run", seconds=round(seconds, 2), finite=bool(np.isfinite(actions).all()))
    best = {name: float("inf") for name in runs}
    for _ in range(args.repeats):
        for name, capture in runs.items():
            best[name] = min(best[name], call(capture)[0])
    if args.repeats:
        for name in runs:
            row = {"phase": f"{name}_run", "best_seconds": round(best[name], 3), "repeats": args.repeats}
            if "plain" in best and name != "plain":
                row["ratio_vs_plain"] = round(best[name] / best["plain"], 3)
            emit(**row)
    for name, cap in caps.items():
        if cap is not None:
            emit(phase=f"capture_sizes_{name}", layout=repr(cap.layout), total_mb=round(cap.nbytes / 1e6, 1),
                 passes=[{"kind": p.kind.value, "step": p.step, "shape": list(p.probs.shape),
                          "mb": round(p.nbytes / 1e6, 2)} for p in cap.passes[:2]], num_passes=len(cap.passes))


# %%
if __name__ == "__main__":
    main()
