"""Attention-capture overhead: time and peak memory of sample_actions with and without capture.

    python benchmarks/bench_capture.py            # test_small: Pi0 layout (816 prefix + 51 suffix), 18 layers
    python benchmarks/bench_capture.py --smoke    # test_tiny, seconds
    python benchmarks/bench_capture.py --config test_small_pi05 --dtype float32

Each capture setting runs in its own subprocess (peak RSS is per process), side by side with
the plain sampler: compile time, best-of-``--repeats`` run time (``block_until_ready`` included
via the host transfer), peak resident memory, and the bytes the Capture holds. One JSON line per
measurement. Each capture setting's process also times the plain sampler, interleaved run by run,
and ``time_ratio_vs_none`` is that in-process ratio (both see the same load); with ``--rounds k`` the settings are cycled k times and each keeps its fastest run,
so a load change on a shared machine hits every setting alike. Settings: none (plain), all (every
layer, head, row, step), actions (action rows of every step, no prefix pass), actions_mean (same,
heads fused at capture), all_mean (every pass, heads fused).
"""

# %%
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SETTINGS = {
    "none": None,
    "all": {},
    "actions": {"prefix": False, "query_rows": "actions"},
    "actions_mean": {"prefix": False, "query_rows": "actions", "heads": "mean"},
    "all_mean": {"heads": "mean"},
}


def measure(config: str, dtype: str, setting: str, repeats: int, steps: int) -> dict:
    import jax
    import numpy as np

    from flowlens.model import CaptureConfig, Observation, Pi0Model, get_config, sample_actions

    cfg = get_config(config).replace(dtype=dtype)
    model = Pi0Model(cfg, image_head_zeroinit=False)
    params = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    s = cfg.siglip.image_size
    images = {c: rng.uniform(-1, 1, (1, s, s, 3)).astype(np.float32) for c in cfg.cameras}
    masks = {c: np.array([c != "right_wrist_0_rgb"]) for c in cfg.cameras}
    tokens = np.zeros((1, cfg.max_token_len), np.int32)
    tokens[0, :12] = [2] + list(range(1000, 1010)) + [108]
    tmask = tokens != 0
    obs = Observation(images, masks, rng.normal(size=(1, cfg.action_dim)).astype(np.float32), tokens, tmask)
    noise = rng.normal(size=(1, cfg.action_horizon, cfg.action_dim)).astype(np.float32)
    capture = None if SETTINGS[setting] is None else CaptureConfig(**SETTINGS[setting])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    _, cap = sample_actions(model, params, obs, noise=noise, num_steps=steps, capture=capture)
    first = time.perf_counter() - t0
    if capture is not None:
        sample_actions(model, params, obs, noise=noise, num_steps=steps)  # compile the plain sampler too
    times, plain = [], []
    for _ in range(repeats):  # interleaved with plain runs: the ratio sees one machine load
        t0 = time.perf_counter()
        actions, cap = sample_actions(model, params, obs, noise=noise, num_steps=steps, capture=capture)
        times.append(time.perf_counter() - t0)
        if capture is not None:
            t0 = time.perf_counter()
            sample_actions(model, params, obs, noise=noise, num_steps=steps)
            plain.append(time.perf_counter() - t0)
    ratio = {} if not plain else {"plain_run_s": round(min(plain), 4),
                                  "time_ratio_vs_none": round(min(times) / min(plain), 3)}
    return {**ratio,
        "bench": "capture", "config": config, "dtype": dtype, "capture": setting, "num_steps": steps,
        "prefix_len": cfg.prefix_len, "suffix_len": cfg.suffix_len,
        "compile_plus_first_s": round(first, 3), "run_s": round(min(times), 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_first_call_mb": round(rss0 / 1024, 1),
        "capture_mb": round(cap.nbytes / 1e6, 2) if cap is not None else 0.0,
        "passes": 0 if cap is None else len(cap.passes),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="test_small")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--rounds", type=int, default=1, help="cycles over the settings; each keeps its best")
    ap.add_argument("--smoke", action="store_true", help="test_tiny, 1 repeat, 2 steps")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.smoke:
        args.config, args.repeats, args.steps = "test_tiny", 1, 2
    if args.one:
        print(json.dumps(measure(args.config, args.dtype, args.one, args.repeats, args.steps)), flush=True)
        return
    best: dict[str, dict] = {}
    for _ in range(args.rounds):  # rounds over all settings: a load change hits every setting alike
        for setting in args.settings.split(","):
            cmd = [sys.executable, __file__, "--one", setting, "--config", args.config, "--dtype", args.dtype,
                   "--repeats", str(args.repeats), "--steps", str(args.steps)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            row = json.loads(out)
            if setting not in best or row["run_s"] < best[setting]["run_s"]:
                best[setting] = row
    base = best.get("none")
    for setting, row in best.items():
        if base is not None and setting != "none":
            row["peak_rss_delta_mb"] = round(row["peak_rss_mb"] - base["peak_rss_mb"], 1)
        row["rounds"] = args.rounds
        row["load_avg_1min"] = round(os.getloadavg()[0], 2)
        print(json.dumps(row), flush=True)


# %%
if __name__ == "__main__":
    main()
