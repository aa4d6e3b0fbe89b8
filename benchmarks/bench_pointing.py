"""Benchmark: do the action tokens' attention maps point at the object the prompt names?

Run (≈ 10 s for 200 frames on a 2-core CPU):     python benchmarks/bench_pointing.py
Smoke (seconds):                                 python benchmarks/bench_pointing.py --smoke

Model: ``builtin:tabletop`` (or ``--run DIR``, a training output directory). Frames: held-out
tabletop scenes (seeds from ``HELD_OUT_SEED``, never trained on), reach-phase frames where the
gripper is still heading for the named source object, so that object is what the action chunk
should draw on. For each frame the real sampler records attention (prefix pass + the chosen
denoising step, all layers, heads averaged at capture time), and three maps of the action
tokens (mean over the 10 action queries) over each camera's 4×4 patches (base and wrist, one
record each) are compared with the named object's mask in that camera (from the renderer):

* ``raw``: last-layer attention of the action tokens;
* ``rollout``: attention rollout through all 18 layers (residual 0.5, Abnar & Zuidema);
* ``flow``: exact attention flow (flowlens.analysis.flow) from the action tokens to every token.

Metrics, per map and camera (mean over frames):

* ``pointing``: pointing game (Zhang et al. 2016) on the patch grid: a hit when the arg-max
  patch, taken back to frame pixels through the letterbox FrameTransform, overlaps the named
  object's mask. ``pointing_chance``: the same for a uniformly drawn (non-padding) patch.
* ``named_first``: the named object gets more map mass than every other object (mass = the
  frame heatmap summed over the object's mask). ``named_first_chance``: 1 / objects in view.
* ``mass_in_mask``: fraction of the frame heatmap's mass inside the named object's mask
  ("weighting game"); ``mass_chance``: the mask's share of the frame (a uniform map).
* ``mass_on_gripper``: the same fraction on the gripper's pixels (``gripper_chance``: its share
  of the frame), and ``nearest_first``: the object nearest to the gripper gets the most mass
  (the frames are chosen with the gripper still far from the named object, so a map centred on
  the gripper favours other objects);
* ``word_rank_color`` / ``word_rank_kind``: 0-based rank of the named object's colour word and
  kind word among the prompt's words (text scores: pieces merged into words; BOS / "\\n" apart);
  ``word_rank_chance``: (words - 1) / 2;
* ``share_base`` / ``share_wrist`` / ``share_text``: the share of the map's mass on each
  camera's patches and on the prompt tokens (does the object reach the actions through the
  prompt or straight from the patches?).

Prints one JSON line per map and a final summary line; ``--out FILE`` also writes them.
"""

# %%
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np


def emit(record: dict, sink: list) -> None:
    record["load1"] = round(os.getloadavg()[0], 2)
    sink.append(record)
    print(json.dumps(record), flush=True)


def load_model(run: str | None):
    from flowlens.model.norm_stats import load_norm_stats
    from flowlens.model.pi0 import Pi0Model
    from flowlens.model.sampler import sample_actions
    from flowlens.model.tokenizer import PaligemmaTokenizer
    from flowlens.tasks.tabletop.builtin import config_from_dict, load_builtin, load_builtin_norm_stats
    from flowlens.tasks.tabletop.params_io import load_params_npz

    if run is None:
        config, params, tok = load_builtin("tabletop")
        stats = load_builtin_norm_stats("tabletop")
    else:
        d = pathlib.Path(run)
        config = config_from_dict(json.loads((d / "config.json").read_text()))
        params = load_params_npz(d / "params.npz")
        tok = PaligemmaTokenizer(d / "tokenizer.model", max_len=config.max_token_len)
        stats = load_norm_stats(d / "norm_stats.json")
    return Pi0Model(config), params, tok, stats


def object_masses(heat: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mass of a frame heatmap [H, W] (normalised to sum 1) inside each mask [N, H, W] → [N]."""
    h = np.clip(np.nan_to_num(heat), 0, None)
    h = h / max(h.sum(), 1e-30)
    return (masks * h[None]).sum(axis=(1, 2))


def patch_hits(seg, mask: np.ndarray) -> np.ndarray:
    """bool [patches]: the patch's frame box overlaps ``mask`` [H, W] (False for padding patches)."""
    out = np.zeros(seg.size, bool)
    for i in range(seg.size):
        top, left, h, w = seg.patch_frame_box(i)
        if h <= 0 or w <= 0:
            continue
        r0, c0 = int(np.floor(top)), int(np.floor(left))
        r1, c1 = int(np.ceil(top + h)), int(np.ceil(left + w))
        out[i] = mask[r0:r1, c0:c1].any()
    return out


def patch_valid(seg) -> np.ndarray:
    """bool [patches]: the patch shows part of the frame (not only letterbox padding)."""
    return np.array([min(seg.patch_frame_box(i)[2:]) > 0 for i in range(seg.size)])


def _score_camera(r: dict, grid, flat, seg, hits, valid, masks, named: int, nearest: int, gripper) -> None:
    """Append one frame's pointing / mass metrics for one camera to the lists in ``r``."""
    from flowlens.projection.image import frame_heatmap

    r["pointing"].append(bool(hits[int(np.argmax(flat))]))
    r["pointing_chance"].append(float(hits[valid].mean()))
    heat = frame_heatmap(grid, seg, smooth=False)
    mass = object_masses(heat, masks)
    visible = masks.any(axis=(1, 2))
    r["named_first"].append(bool(np.argmax(mass) == named))
    r["named_first_chance"].append(1.0 / max(int(visible.sum()), 1))
    r["mass_in_mask"].append(float(mass[named]))
    r["mass_chance"].append(float(masks[named].mean()))
    r["mass_on_gripper"].append(float(object_masses(heat, gripper[None])[0]))
    r["gripper_chance"].append(float(gripper.mean()))
    r["nearest_first"].append(bool(np.argmax(mass) == nearest))


def maps_for(capture, step: int, flow_fn):
    """token scores (float [n], NaN at removed tokens) of the action tokens: raw, rollout, flow."""
    from flowlens.analysis.rollout import rollout
    from flowlens.core.graph import TokenGraph

    graph = TokenGraph.from_capture(capture, step, heads="mean", residual=0.5)
    q = graph.select(kind="action")
    raw_nodes = graph.attention[-1][q].mean(axis=0)  # last layer, no residual
    out = {"raw": graph.to_tokens(raw_nodes)}
    out["rollout"] = rollout(graph, kind="action", all_layers=False).token_scores(reduce="mean")
    if flow_fn is not None:
        res = flow_fn(graph, kind="action")  # sources: every node, in node order
        out["flow"] = graph.to_tokens(res.values.mean(axis=0))
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=200, help="held-out frames (one per scene)")
    ap.add_argument("--step", type=int, default=-1, help="denoising step whose suffix pass is used (-1: last)")
    ap.add_argument("--run", default=None, help="training output dir instead of builtin:tabletop")
    ap.add_argument("--out", default=None, help="also write the JSON lines here")
    ap.add_argument("--smoke", action="store_true", help="8 frames")
    a = ap.parse_args(argv)
    n_frames = 8 if a.smoke else a.frames

    from flowlens.model.capture_config import CaptureConfig
    from flowlens.projection.image import camera_segment, patch_grid
    from flowlens.projection.text import word_scores
    from flowlens.tasks.tabletop.evaluate import held_out_cases
    from flowlens.tasks.tabletop.policy import observe
    from flowlens.tasks.tabletop.render import GRIPPER_ID

    try:
        from flowlens.analysis.flow import flow as flow_fn
    except ImportError:  # pragma: no cover - flow lands separately
        flow_fn = None
        print("flowlens.analysis.flow not available: reporting raw and rollout only", file=sys.stderr)

    model, params, tok, stats = load_model(a.run)
    cfg = model.config
    cases = held_out_cases(n_frames, render_frames=True)
    cap_cfg = CaptureConfig(heads="mean", image_norms=False)  # all steps: a capture must hold steps 0..k
    methods = ["raw", "rollout"] + (["flow"] if flow_fn is not None else [])
    cameras = list(cfg.cameras)
    rec = {
        (m, cam): {
            k: []
            for k in (
                "pointing",
                "pointing_chance",
                "named_first",
                "named_first_chance",
                "mass_in_mask",
                "mass_chance",
                "mass_on_gripper",
                "gripper_chance",
                "nearest_first",
                "word_rank_color",
                "word_rank_kind",
                "word_rank_chance",
            )
        }
        for m in methods
        for cam in cameras
    }
    shares: dict[str, list] = {m: [] for m in methods}
    t0 = time.time()
    key_noise = np.random.default_rng(0)
    for case in cases:
        ep, t = case.episode, case.t
        frames = {c: ep.frames[c][t] for c in cfg.cameras}
        obs = observe(frames, case.scene.prompt, ep.states[t], tok, cfg, stats)
        noise = key_noise.standard_normal((1, cfg.action_horizon, cfg.action_dim)).astype(np.float32)
        _, capture = sample_actions(model, params, obs, noise=noise, capture=cap_cfg)
        layout = capture.layout
        named = case.scene.source
        nearest = int(np.argmin(np.linalg.norm(ep.object_xy[t] - ep.states[t, None, :2], axis=1)))
        src = case.scene.source_object
        groups = {
            "share_base": layout.select(kind="image", camera="base_0_rgb"),
            "share_wrist": layout.select(kind="image", camera="left_wrist_0_rgb"),
            "share_text": layout.select(kind="text"),
        }
        ids = {cam: view[1] for cam, view in ep.render_frame(t).items()}  # id buffers (gripper pixels)
        per_camera = {}
        for cam in cameras:  # what does not depend on the map: patch boxes, masks, hits
            seg = camera_segment(layout, cam)
            masks = ep.masks[cam][t]  # [N, H, W]
            per_camera[cam] = (seg, masks, ids[cam] == GRIPPER_ID, patch_hits(seg, masks[named]), patch_valid(seg))
        for m, scores in maps_for(capture, a.step, flow_fn).items():
            total = np.nansum(scores)
            shares[m].append([float(np.nansum(scores[idx]) / total) for idx in groups.values()])
            ws = word_scores(scores, layout)
            for cam, (seg, masks, gripper, hits, valid) in per_camera.items():
                grid = patch_grid(scores, layout, cam)
                flat = np.where(valid, np.nan_to_num(grid.reshape(-1), nan=-np.inf), -np.inf)
                r = rec[m, cam]
                _score_camera(r, grid, flat, seg, hits, valid, masks, named, nearest, gripper)
                r["word_rank_color"].append(ws.rank_of(src.color))
                r["word_rank_kind"].append(ws.rank_of(src.kind))
                r["word_rank_chance"].append((len(ws.words) - 1) / 2)
    seconds = time.time() - t0
    out: list[dict] = []
    for m in methods:
        share = np.mean(shares[m], axis=0)
        for cam in cameras:
            emit(
                {
                    "map": m,
                    "camera": cam,
                    "frames": len(cases),
                    "step": a.step,
                    **{k: round(float(np.mean(v)), 4) for k, v in rec[m, cam].items()},
                    **{
                        k: round(float(v), 4)
                        for k, v in zip(("share_base", "share_wrist", "share_text"), share, strict=True)
                    },
                },
                out,
            )
    emit(
        {
            "summary": "pointing",
            "frames": len(cases),
            "seconds": round(seconds, 1),
            "model": a.run or "builtin:tabletop",
            "flow": flow_fn is not None,
        },
        out,
    )
    if a.out:
        pathlib.Path(a.out).write_text("\n".join(json.dumps(r) for r in out) + "\n")
    return out


if __name__ == "__main__":
    main()
