"""Peak resident memory of loading a PyTorch-layout (safetensors) Pi0 checkpoint vs its file size.

    python benchmarks/bench_checkpoint_ram.py                       # full-size Pi0, bf16 (6.5 GB file)
    python benchmarks/bench_checkpoint_ram.py --config test_small   # seconds
    python benchmarks/bench_checkpoint_ram.py --dir /big/disk --keep

A writer subprocess writes random weights in openpi's PyTorch layout one tensor at a time
(``write_safetensors_streamed``: it never holds the whole model); a fresh loader subprocess then
runs ``load_checkpoint(dir, config)`` (parameters kept in the file's dtype) and reports its peak
RSS (``ru_maxrss``, which counts memory-mapped file pages while they are resident) next to the
file size and its RSS before loading (Python + JAX). One JSON line. Target: peak < 1.3 × file.
"""

# %%
from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import tempfile
import time


def write(directory: str, config: str, dtype: str) -> None:
    import ml_dtypes
    import numpy as np

    from flowlens.model.checkpoint import expected_param_shapes
    from flowlens.model.config import get_config
    from flowlens.model.safetensors_io import write_safetensors_streamed
    from flowlens.model.torch_layout import torch_rules, torch_shape

    cfg = get_config(config)
    shapes = expected_param_shapes(cfg)
    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    specs = [(r.torch, torch_shape(r.kind, shapes[r.key][len(r.index):]), np_dtype) for r in torch_rules(cfg)]
    sizes = dict((n, s) for n, s, _ in specs)
    rng = np.random.default_rng(0)

    def produce(name: str):
        return (0.02 * rng.standard_normal(sizes[name], dtype=np.float32)).astype(np_dtype)

    root = pathlib.Path(directory)
    write_safetensors_streamed(root / "model.safetensors", specs, produce, metadata={"format": "pt"})
    (root / "config.json").write_text(json.dumps({"action_dim": cfg.action_dim, "action_horizon": cfg.action_horizon,
                                                  "paligemma_variant": "gemma_2b", "precision": dtype}))


def _rss_kb() -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def load(directory: str, config: str) -> None:
    from flowlens.model.checkpoint import load_checkpoint, param_count

    before = _rss_kb()
    t = time.perf_counter()
    ckpt = load_checkpoint(directory, config)
    seconds = time.perf_counter() - t
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    size = (pathlib.Path(directory) / "model.safetensors").stat().st_size
    print(json.dumps({
        "config": config, "params": param_count(ckpt.params), "file_bytes": size,
        "rss_before_load_bytes": before * 1024, "peak_rss_bytes": peak_kb * 1024,
        "peak_over_file": round(peak_kb * 1024 / size, 3),
        "peak_minus_baseline_over_file": round((peak_kb - before) * 1024 / size, 3),
        "load_seconds": round(seconds, 1), "rss_after_bytes": _rss_kb() * 1024,
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="pi0")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--dir", default=None, help="where to write the checkpoint (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the written checkpoint")
    ap.add_argument("--phase", choices=["write", "load"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase == "write":
        return write(args.dir, args.config, args.dtype)
    if args.phase == "load":
        return load(args.dir, args.config)
    tmp = tempfile.TemporaryDirectory(dir=args.dir)
    try:
        base = [sys.executable, __file__, "--config", args.config, "--dtype", args.dtype, "--dir", tmp.name]
        t = time.perf_counter()
        subprocess.run([*base, "--phase", "write"], check=True)
        print(json.dumps({"write_seconds": round(time.perf_counter() - t, 1)}), file=sys.stderr)
        subprocess.run([*base, "--phase", "load"], check=True)
    finally:
        if args.keep:
            print(f"kept {tmp.name}", file=sys.stderr)
        else:
            tmp.cleanup()


if __name__ == "__main__":
    main()
