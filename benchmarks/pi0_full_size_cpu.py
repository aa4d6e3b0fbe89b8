"""Full-size Pi0 (3.24 B parameters, random weights, bf16) on CPU: one sample_actions with capture.

    python benchmarks/pi0_full_size_cpu.py                      # pi0_libero, capture actions rows, 10 steps
    python benchmarks/pi0_full_size_cpu.py --capture all        # + the 383 MB prefix pass
    python benchmarks/pi0_full_size_cpu.py --config pi05_libero --steps 2
    python benchmarks/pi0_full_size_cpu.py --smoke              # the `dummy` variant (So400m + tiny Gemma)

Not run in CI: it needs ~8 GB of memory (parameters in bfloat16 ≈ 6.5 GB) and minutes of CPU.
Random weights (SigLIP head not zero-initialised) exercise exactly the shapes, masks and cache
of the real model; numbers are about the machine, not about a policy. Prints one JSON line per
phase: init, the plain sampler, the sampler with capture (compile + first run, and a second run),
and the capture's sizes per pass.
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
    print(json.dumps({"bench": "pi0_full_size_cpu", **row, "peak_rss_gb": rss_gb()}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="pi0_libero")
    ap.add_argument("--capture", default="actions", choices=list(CAPTURES))
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

    if not args.skip_plain:
        t0 = time.perf_counter()
        actions, _ = sample_actions(model, params, obs, noise=noise, num_steps=args.steps)
        emit(phase="plain_compile_and_run", seconds=round(time.perf_counter() - t0, 1),
             finite=bool(np.isfinite(actions).all()))
        t0 = time.perf_counter()
        sample_actions(model, params, obs, noise=noise, num_steps=args.steps)
        emit(phase="plain_run", seconds=round(time.perf_counter() - t0, 1))

    capture = CAPTURES[args.capture]
    if capture is None:
        return
    t0 = time.perf_counter()
    actions, cap = sample_actions(model, params, obs, noise=noise, num_steps=args.steps, capture=capture)
    emit(phase=f"capture_{args.capture}_compile_and_run", seconds=round(time.perf_counter() - t0, 1))
    t0 = time.perf_counter()
    actions, cap = sample_actions(model, params, obs, noise=noise, num_steps=args.steps, capture=capture)
    emit(phase=f"capture_{args.capture}_run", seconds=round(time.perf_counter() - t0, 1))
    emit(phase="capture_sizes", layout=repr(cap.layout), total_mb=round(cap.nbytes / 1e6, 1),
         passes=[{"kind": p.kind.value, "step": p.step, "time": p.time, "shape": list(p.probs.shape),
                  "mb": round(p.nbytes / 1e6, 2)} for p in cap.passes])


# %%
if __name__ == "__main__":
    main()
