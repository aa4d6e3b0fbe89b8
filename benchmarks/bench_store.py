"""Capture store at Pi0 scale: disk per frame, write/read time, precision error and peak RAM.

A 100-frame episode of synthetic Pi0 LIBERO captures (18 layers, 8 heads, n = 867 = 816 prefix +
1 state + 50 actions, 10 denoising steps) is stored under each storage policy and precision, then
analysed back from the store (``action_group_mass`` through ``run_batch``).

    python benchmarks/bench_store.py            # 100 frames (≈ 10 min on 2 cores, ≈ 18 GB scratch)
    python benchmarks/bench_store.py --smoke    # 3 frames, ≈ 1.5 min (full-policy frames dominate)

Three phases, one JSON line per measurement:

1. ``sizes``: for every policy × precision (× deflate on/off), a few frames are stored and read
   back: bytes per frame on disk, put / get seconds, measured max abs error vs the stated bound.
   The ``full`` policy (all heads, all rows: ≈ 638 MB per frame in float32) is measured on
   ``--full-frames`` frames and **extrapolated** to the episode (``extrapolated: true``): 100
   frames would be ≈ 64 GB.
2. ``full-policy-peak``: a fresh subprocess generates one full capture, stores it in each
   precision, reads it back and analyses it: the peak RSS of a full-policy pipeline.
3. ``episode``: for each of the smaller policies, one fresh subprocess stores the whole episode in
   all four precisions and analyses each store; it reports peak RSS (``VmHWM``, which
   includes Python / numpy / flowlens imports) and total disk.

Captures are recorded head-fused (``head_reduction="mean"``) for the smaller policies, as a model
records them when only fused heads are kept. Attention is random (squared uniform, masked), so
deflate only gains from the exact zeros of masked keys; real attention will differ.
Scratch space is under ``--workdir`` (a temporary folder by default, removed at the end).
"""

# %%
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from flowlens.core.capture import AttentionPass, Capture, PassKind
from flowlens.core.openpi_layout import pi0_layout
from flowlens.analysis import action_group_mass
from flowlens.io import ERROR_BOUND, PRECISIONS, FrameSpec, open_store, run_batch
from flowlens.io.store import policy_bytes

LAYERS, HEADS, STEPS = 18, 8, 10


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss survives exec, so a child would
    report its parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# %%
def pi0_capture(seed: int, *, fused: bool) -> Capture:
    """Random row-stochastic attention under openpi's Pi0 mask (masked query rows uniform, as the
    real softmax gives); ``fused`` records one mean head."""
    layout = pi0_layout()
    rng = np.random.default_rng(seed)
    mask = layout.attention_mask()
    heads = 1 if fused else HEADS

    def rows(q: np.ndarray, keys: int) -> np.ndarray:
        m = mask[q][:, :keys]
        x = rng.random((LAYERS, heads, len(q), keys), dtype=np.float32)
        x *= x  # a little peakier than uniform
        x *= m
        x[:, :, ~m.any(axis=1)] = 1.0
        x /= x.sum(axis=-1, keepdims=True)
        return x

    red = "mean" if fused else None
    layers = tuple(range(LAYERS))
    p, n = layout.prefix_len, layout.n
    passes = [AttentionPass(PassKind.PREFIX, rows(np.arange(p), p), layers, np.arange(p), head_reduction=red)]
    passes += [
        AttentionPass(
            PassKind.SUFFIX,
            rows(np.arange(p, n), n),
            layers,
            np.arange(p, n),
            step=s,
            time=1 - s / STEPS,
            head_reduction=red,
        )
        for s in range(STEPS)
    ]
    return Capture(
        layout,
        LAYERS,
        HEADS,
        tuple(passes),
        rng.normal(size=(50, 7)).astype(np.float32),
        "synthetic-pi0",
        {"frame": seed},
    )


def analyse_store(spec: FrameSpec) -> list[dict]:
    """Per-frame analysis reading the capture back from a store (spec.source = store folder)."""
    store = open_store(spec.source, mode="r")
    return action_group_mass(store.get(spec.key))


# %%
def phase_sizes(work: Path, *, frames: int, full_frames: int, episode: int) -> None:
    for policy in ("full", "fused", "rows_for_rollout", "action_rows"):
        n = full_frames if policy == "full" else frames
        caps = [pi0_capture(i, fused=policy != "full") for i in range(n)]
        for precision in PRECISIONS:
            for compress in (False, True):
                if compress and policy == "full":
                    continue  # deflating 640 MB per frame takes ~30 s and saves little on random data
                root = work / f"size-{policy}-{precision}-{int(compress)}"
                store = open_store(root, policy=policy, precision=precision, compress=compress)
                t0 = time.perf_counter()
                for i, c in enumerate(caps):
                    store.put(f"f{i:04d}", c)
                t_put = (time.perf_counter() - t0) / n
                t0 = time.perf_counter()
                for key in store.keys():
                    store.get(key)
                t_get = (time.perf_counter() - t0) / n
                per_frame = store.bytes_on_disk / n
                emit(
                    phase="sizes",
                    policy=policy,
                    precision=precision,
                    compress=compress,
                    frames_measured=n,
                    mb_per_frame=round(per_frame / 1e6, 2),
                    raw_mb_per_frame=round(
                        policy_bytes(
                            caps[0].layout,
                            num_layers=LAYERS,
                            num_heads=HEADS,
                            num_steps=STEPS,
                            policy=policy,
                            precision=precision,
                        )
                        / 1e6,
                        2,
                    ),
                    episode_gb=round(per_frame * episode / 1e9, 2),
                    extrapolated=n < episode,
                    put_s=round(t_put, 3),
                    get_s=round(t_get, 3),
                    max_abs_error=store.max_abs_error,
                    error_bound=ERROR_BOUND[precision],
                    within_bound=store.max_abs_error <= ERROR_BOUND[precision],
                )
                shutil.rmtree(root)
        del caps


def phase_full_peak(work: Path) -> None:
    """Run in a fresh process: one full-policy frame (all heads, all rows) generated, stored in
    each precision, read back and analysed — the peak RSS of a full-policy pipeline."""
    rss_imports = peak_rss_mb()
    c = pi0_capture(0, fused=False)
    for precision in PRECISIONS:
        store = open_store(work / f"peak-{precision}", policy="full", precision=precision)
        store.put("f0", c)
        action_group_mass(store.get("f0"))
        shutil.rmtree(store.root)
    emit(
        phase="full-policy-peak",
        capture_mb=round(c.nbytes / 1e6),
        rss_after_imports_mb=round(rss_imports),
        peak_rss_mb=round(peak_rss_mb()),
        peak_rss_beyond_imports_mb=round(peak_rss_mb() - rss_imports),
    )


def phase_episode(work: Path, policy: str, frames: int) -> None:
    """Run in a fresh process: store ``frames`` frames in every precision, then analyse each store."""
    stores = {p: open_store(work / f"ep-{policy}-{p}", policy=policy, precision=p) for p in PRECISIONS}
    rss_imports = peak_rss_mb()
    t0 = time.perf_counter()
    for i in range(frames):
        c = pi0_capture(1000 + i, fused=True)
        for store in stores.values():
            store.put(f"ep__f{i:06d}", c)
        del c
    t_store = time.perf_counter() - t0
    for precision, store in stores.items():
        specs = [FrameSpec("ep", i, str(store.root)) for i in range(frames)]
        t0 = time.perf_counter()
        res = run_batch(
            analyse_store, specs, work / f"res-{policy}-{precision}", chunk_size=25, progress=False
        )
        emit(
            phase="episode",
            policy=policy,
            precision=precision,
            frames=frames,
            disk_gb=round(store.bytes_on_disk / 1e9, 3),
            mb_per_frame=round(store.bytes_on_disk / frames / 1e6, 2),
            analyse_s_per_frame=round((time.perf_counter() - t0) / frames, 3),
            rows=len(res.table),
            max_abs_error=store.max_abs_error,
        )
    emit(
        phase="episode-total",
        policy=policy,
        frames=frames,
        store_s_per_frame_all_precisions=round(t_store / frames, 3),
        rss_after_imports_mb=round(rss_imports),
        peak_rss_mb=round(peak_rss_mb()),
        peak_rss_beyond_imports_mb=round(peak_rss_mb() - rss_imports),
    )
    for p in PRECISIONS:
        shutil.rmtree(work / f"ep-{policy}-{p}")


# %%
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=100, help="frames of the episode run")
    ap.add_argument(
        "--size-frames", type=int, default=3, help="frames per policy × precision in the sizes phase"
    )
    ap.add_argument("--full-frames", type=int, default=2, help="frames measured for the full policy")
    ap.add_argument("--smoke", action="store_true", help="3-frame episode, 1 frame per size measurement")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--only", choices=["sizes", "episode"], default=None)
    ap.add_argument("--_episode_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.smoke:
        args.frames, args.size_frames, args.full_frames = 3, 1, 1
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_store_"))
    work.mkdir(parents=True, exist_ok=True)
    if args._episode_child == "full-peak":
        phase_full_peak(work)
        return
    if args._episode_child:
        phase_episode(work, args._episode_child, args.frames)
        return
    try:
        if args.only in (None, "sizes"):
            phase_sizes(work, frames=args.size_frames, full_frames=args.full_frames, episode=args.frames)
        if args.only in (None, "episode"):
            for policy in ("full-peak", "fused", "rows_for_rollout", "action_rows"):
                subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--frames",
                        str(args.frames),
                        "--workdir",
                        str(work),
                        "--_episode_child",
                        policy,
                    ],
                    check=True,
                )
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
