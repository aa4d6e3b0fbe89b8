"""``flowlens demo``: generate a successful and a failed episode and run every command on them.

With the embedded model (``builtin:tabletop``, from ``flowlens.tasks``) the episodes come from its
own ``generate_demo_episodes``. Without it, the demo writes base-camera MP4 rollouts of the same
tabletop task (its expert and renderer: the robot carries the named object onto the target — or
picks the look-alike distractor) and uses *synthetic attention*
(``flowlens.pipeline.backends.SyntheticBackend``): the figures then show what flowlens draws, not
what any trained policy attends to, and the demo says so.

Writes under the output folder::

    episodes/                       the two generated episodes
    single/attention_*.png          every figure type for one frame (rollout)
    single_raw/attention_*.png      raw attention of the same frame (image, text)
    single_flow/attention_image.png attention flow after the last layer (when flowlens.analysis.flow is there)
    episode/<episode>/              per-frame heatmaps, attention_over_time.mp4 / .gif, shares over frames
    compare.png                     success vs failure at the same frame index
    report.html                     the interactive report
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from flowlens.errors import FlowlensError

NUM_FRAMES = 40


# ---- the episodes -------------------------------------------------------------------------------
def synthetic_episode(success: bool, seed: int = 0, frames: int = NUM_FRAMES) -> tuple[str, np.ndarray]:
    """The tabletop task's expert doing its prompt (or picking the look-alike distractor instead),
    drawn by the task's renderer (``flowlens.tasks.tabletop.render``), as a base-camera rollout.

    Returns:
      (prompt, uint8 [min(frames, T), 144, 192, 3] evenly spaced frames of the T-frame episode).
    """
    from flowlens.tasks.tabletop import run_expert
    from flowlens.tasks.tabletop.episodes import failure_scene

    scene, wrong = failure_scene(seed)
    video = run_expert(scene, picked=None if success else wrong).frames["base_0_rgb"]
    idx = np.unique(np.linspace(0, len(video) - 1, frames).round().astype(int))
    return scene.prompt, video[idx]


def _synthetic_episodes(folder: Path, seed: int, frames: int = NUM_FRAMES):
    from flowlens.io.files import safe_name
    from flowlens.io.sources import open_episode, write_video

    videos = folder
    videos.mkdir(parents=True, exist_ok=True)
    paths = {}
    for ok in (True, False):
        prompt, video = synthetic_episode(ok, seed, frames)
        path = videos / f"rollout_{safe_name(prompt)}_{'success' if ok else 'failure'}.mp4"
        write_video(path, video, fps=10)
        paths[ok] = path
    return open_episode(paths[True]), open_episode(paths[False])


def _builtin_episodes(folder: Path, seed: int):
    """A success and a failure of the *same* task from ``flowlens.tasks.tabletop``.

    ``generate_demo_episodes`` returns a success and a failure; when their prompts differ (the
    failure comes from another scene), the success is re-run by the expert on the failure's
    scene, so that compare shows one prompt in one scene done right and done wrong.
    """
    import json

    from flowlens.io.sources import open_episode
    from flowlens.tasks.tabletop import generate_demo_episodes, run_expert, sample_scene, write_episode_dir

    ok_dir, bad_dir = generate_demo_episodes(folder, seed=seed)
    success, failure = open_episode(ok_dir), open_episode(bad_dir)
    if " ".join(success.prompt.split()) != " ".join(failure.prompt.split()):
        meta = json.loads((Path(bad_dir) / "episode.json").read_text(encoding="utf-8"))["metadata"]
        ok_dir = write_episode_dir(
            run_expert(sample_scene(int(meta["scene"]["seed"]))),
            Path(folder) / "tabletop_success_same_task",
            overwrite=True,
        )
        success = open_episode(ok_dir)
    if success.success is not True or failure.success is not False or success.prompt != failure.prompt:
        raise FlowlensError(
            f"the generated demo episodes are not a success and a failure of one task: {success.prompt!r} "
            f"({success.success}) vs {failure.prompt!r} ({failure.success})."
        )
    return success, failure


# ---- the tour ------------------------------------------------------------------------------------
def run_demo(
    out_dir: str | Path = "flowlens_demo",
    *,
    checkpoint: str | None = None,
    seed: int = 0,
    progress: bool = True,
    num_frames: int = NUM_FRAMES,
    log: Callable[[str], None] = print,
) -> dict[str, list[Path]]:
    """Run single / episode / compare / report on a generated success and failure episode.

    Args:
      out_dir: output folder (created).
      checkpoint: model (default: ``builtin:tabletop`` when installed, else ``synthetic``).
      seed: seed of the generated episodes and of the sampler.
      num_frames: frames per synthetic episode (the embedded model's episodes have their own length).
    Returns:
      {section: [paths written]}.
    """
    from flowlens.pipeline.backends import builtin_available, load_backend
    from flowlens.pipeline.compare import compare_episodes
    from flowlens.pipeline.episode import run_episode
    from flowlens.pipeline.frames import run_single
    from flowlens.pipeline.render import expand_viz
    from flowlens.pipeline.report import build_episode_report, flow_available
    from flowlens.pipeline.spec import AnalysisSpec

    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if checkpoint is None:
        checkpoint = "builtin:tabletop" if builtin_available() else "synthetic"
    synthetic = checkpoint.startswith("synthetic")
    log(f"flowlens demo → {out.resolve()}")
    if synthetic:
        why = "as asked" if builtin_available() else "because the embedded model (builtin:tabletop) is not installed"
        log(f"  NOTE: this demo runs on SYNTHETIC attention over SYNTHETIC frames, {why}:")
        log("        the figures show what flowlens draws, not what a trained policy attends to.")
    backend = load_backend(checkpoint)
    log(
        f"  model: {backend.name} ({backend.num_layers} layers × {backend.num_heads} heads, "
        f"{backend.num_steps} denoising steps)"
    )
    episodes = out / "episodes"
    if num_frames < 4:
        raise FlowlensError(f"num_frames must be at least 4 (a few frames of each phase), got {num_frames}.")
    success, failure = (
        _synthetic_episodes(episodes, seed, num_frames)
        if synthetic or not builtin_available()
        else _builtin_episodes(episodes, seed)
    )
    with success, failure:  # their video files are closed at the end
        log(
            f"  episodes: {success.name} ({len(success)} frames, success), {failure.name} "
            f"({len(failure)} frames, failure)"
        )
        n = len(success)
        mid = min(n, len(failure)) // 2
        last = backend.num_layers - 1
        spec = AnalysisSpec(method="rollout", query="action:0", layers=(0, last // 2, last))
        written: dict[str, list[Path]] = {"episodes": sorted(p for p in episodes.rglob("*") if p.is_file())}

        log(
            f"  at {time.time() - t0:5.1f} s · [1/4] single frame {mid}: every figure type (rollout; raw "
            "attention alongside)"
        )
        single = run_single(success, mid, backend, spec, viz=expand_viz("full"), output=out / "single", seed=seed)
        raw = run_single(
            success,
            mid,
            backend,
            dataclasses.replace(spec, method="raw"),
            viz=("image", "text"),
            output=out / "single_raw",
            seed=seed,
        )
        written["single"] = list(single.values()) + list(raw.values())
        if flow_available():  # one exact max-flow problem per layer: the last layer only, to stay quick
            flow_spec = dataclasses.replace(spec, method="flow", layers=(last,))
            flow = run_single(success, mid, backend, flow_spec, viz=("image",), output=out / "single_flow", seed=seed)
            written["single"] += list(flow.values())

        step = max(1, n // 8)
        log(
            f"  at {time.time() - t0:5.1f} s · [2/4] episode: every {step} frames → heatmaps, MP4 + GIF of "
            "attention over time"
        )
        summary = run_episode(
            success,
            backend,
            spec,
            out_dir=out / "episode",
            frame_step=step,
            viz=("image",),
            fps=4,
            progress=progress,
            seed=seed,
            log=log,
        )
        written["episode"] = [Path(p) for f in summary["frame_files"].values() for p in f.values()]
        ep_dir = Path(summary["output_dir"])
        written["episode"] += [Path(p) for p in summary["episode_files"].values()] + [ep_dir / "episode.json"]

        log(f"  at {time.time() - t0:5.1f} s · [3/4] compare: success vs failure at frame {mid}")
        written["compare"] = list(
            compare_episodes(
                success, failure, backend, spec, frames=[mid], output=out / "compare.png", seed=seed
            ).values()
        )

        frames = sorted({0, n // 2, n - 1})
        log(
            f"  at {time.time() - t0:5.1f} s · [4/4] report: frames {frames} (raw attention and rollout; "
            "add flow with flowlens report --methods)"
        )
        written["report"] = [
            build_episode_report(
                success,
                backend,
                spec,
                frames=frames,
                output=out / "report.html",
                seed=seed,
                progress=progress,
                methods=("raw", "rollout"),
            )
        ]

    log(f"\nwrote {sum(len(v) for v in written.values())} files in {time.time() - t0:.0f} s:")
    for section, paths in written.items():
        log(f"  {section}:")
        for p in paths:
            log(f"    {p}  ({p.stat().st_size / 1e3:.0f} kB)")
    log(f"open {out / 'report.html'} in a browser; figures are PNGs, the video is {ep_dir / 'attention_over_time.mp4'}")
    if synthetic:
        log("(synthetic attention — install the embedded model or pass --checkpoint for real figures)")
    return written
