"""A whole episode: the figures of many frames, attention over time as MP4 / GIF, resumable.

``run_episode`` writes, under ``out_dir/<episode name>/`` (one folder per episode, so several
episodes can share an output folder; the name is made file-name safe)::

    frame_0010/attention_<type>.png     the --viz-type figures of each frame visited
    frame_0010/scores.npz               that frame's scores [layer, token] (written last: the frame is done)
    attention_over_time.mp4 / .gif      the focus layer's heatmap over the frames, cameras side by side
    attention_evolution_frames.png      share of the query's mass per token group, frame by frame
    episode.json                        what was run and what was written

The folder holds exactly what ``episode.json`` lists: figures, frame folders and episode-level
files that an earlier run into the same folder wrote and this run does not (other viz types,
frames, ``--no-video``) are removed. Only flowlens's own file names are touched.

Resumable: a frame whose ``scores.npz`` matches this run's settings and whose figures all exist
is skipped, so an interrupted run picks up where it stopped (every file is written atomically;
leftover temporary files of a killed run are removed). Episode-level files are re-rendered from
the saved scores each time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError
from flowlens.pipeline.frames import capture_frame, capture_needs, compute_frame, frame_indices
from flowlens.pipeline.render import expand_viz, output_paths, render_figures
from flowlens.pipeline.sources import source_prompt
from flowlens.pipeline.spec import AnalysisSpec

SCORES_FILE = "scores.npz"
VIDEO_NAME = "attention_over_time"


def _fingerprint(spec: AnalysisSpec, backend_name: str, seed: int, prompt: str, source) -> str:
    text = json.dumps(
        {
            "spec": spec.to_dict(),
            "model": backend_name,
            "seed": seed,
            "prompt": prompt,
            "source": str(source.path),
            "episode": source.name,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def episode_folder(out_dir: str | os.PathLike, name: str) -> Path:
    """``<out_dir>/<episode name>``, the name made file-name safe; it can never leave ``out_dir``."""
    from flowlens.io.files import safe_name

    root = Path(out_dir)
    folder = root / safe_name(name, fallback="episode")
    if root.resolve() not in folder.resolve().parents:
        raise FlowlensError(f"episode name {name!r} would leave the output folder {str(root)!r}.")
    return folder


def _save_scores(path: Path, scores: np.ndarray, layers, layout: TokenLayout, fingerprint: str, focus: int) -> None:
    from flowlens.io.files import atomic_write

    with atomic_write(path) as f:
        np.savez(
            f,
            scores=scores.astype(np.float32),
            layers=np.asarray(layers, np.int64),
            layout=np.array(json.dumps(layout.to_dict())),
            fingerprint=np.array(fingerprint),
            focus=np.array(focus),
        )


def _load_scores(path: Path, fingerprint: str):
    """(scores [layer, token], layers, layout) of a finished frame, or None when absent / stale /
    unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint:
                return None
            return (
                z["scores"].astype(np.float64),
                tuple(int(x) for x in z["layers"]),
                TokenLayout.from_dict(json.loads(str(z["layout"]))),
            )
    except Exception:  # a damaged cache file is recomputed, never trusted
        return None


FRAME_DIR = re.compile(r"^frame_\d{4,}$")
EPISODE_FILES = (f"{VIDEO_NAME}.mp4", f"{VIDEO_NAME}.gif", "attention_evolution_frames.png")


def remove_stale_outputs(out: Path, keep: set[Path]) -> list[Path]:
    """Remove the flowlens outputs under ``out`` that are not in ``keep`` (this run's files).

    Touches only names flowlens writes: ``frame_XXXX/attention_*.png`` and ``scores.npz`` (a frame
    folder left empty is removed), and the episode-level video, GIF and evolution PNG. Returns the
    removed paths.
    """
    keep = {Path(p).resolve() for p in keep}
    removed = []
    candidates = [out / name for name in EPISODE_FILES]
    frame_dirs = [d for d in out.iterdir() if d.is_dir() and FRAME_DIR.match(d.name)] if out.is_dir() else []
    for d in frame_dirs:
        candidates += [*d.glob("attention_*.png"), d / SCORES_FILE]
    for path in candidates:
        if path.is_file() and path.resolve() not in keep:
            path.unlink()
            removed.append(path)
    for d in frame_dirs:
        if not any(d.iterdir()):
            d.rmdir()
    return removed


def _clean_temps(folder: Path) -> None:
    from flowlens.io.files import remove_stale_temps

    remove_stale_temps(folder)


def run_episode(
    source,
    backend,
    spec: AnalysisSpec,
    *,
    out_dir: str | os.PathLike,
    frames: Sequence[int] | None = None,
    frame_step: int | None = None,
    viz: Sequence[str] | str = "all",
    fps: float = 2.0,
    video: bool = True,
    gif: bool = True,
    progress: bool = True,
    seed: int = 0,
    dpi: int = 110,
    store: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
    figure_options: Mapping[str, object] | None = None,
) -> dict:
    """The ``flowlens episode`` command (see the module docstring).

    Args:
      source: an EpisodeSource.
      backend: from ``load_backend``.
      spec: the analysis.
      out_dir: output folder (created).
      frames: frame indices to visit (default: every ``frame_step``-th frame, 10 by default).
      viz: figure types per frame ("all", "image", ..., or several).
      fps: frames per second of the attention video.
      video, gif: write the MP4 / GIF of attention over time.
      progress: show a progress bar (stderr).
      store: keep every frame's capture in a ``flowlens.io.store`` CaptureStore at this folder
        (policy ``rows_for_rollout``: mean over heads, valid rows; float16), and take captures from
        it instead of running the model when a later run (other method, layers, figures) can.
    Returns:
      The summary written to ``episode.json`` (frames, files, skipped frames).
    """
    from tqdm.auto import tqdm

    kinds = expand_viz(viz)
    prompt = source_prompt(source)
    indices = frame_indices(len(source), frames, frame_step)
    spec.check_model(num_layers=backend.num_layers, num_heads=backend.num_heads, num_steps=backend.num_steps)
    focus = spec.figure_layers(backend.num_layers)[-1]
    out = episode_folder(out_dir, source.name)
    out.mkdir(parents=True, exist_ok=True)
    _clean_temps(out)
    fingerprint = _fingerprint(spec, backend.name, seed, prompt, source)
    from flowlens.io.store import frame_key, open_store

    capture_store = None
    if store is not None:
        capture_store = open_store(store, policy="rows_for_rollout", precision="float16")
    counts: dict[str, int] = {}
    focus_scores, layouts, done, skipped, files = [], [], [], [], {}
    bar = tqdm(indices, desc="frames", unit="frame", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    for i in bar:
        fdir = out / f"frame_{i:04d}"
        paths = output_paths(fdir, kinds)  # frame_XXXX/attention_<type>.png
        cached = _load_scores(fdir / SCORES_FILE, fingerprint)
        if cached is not None and all(p.is_file() for p in paths.values()):
            scores, layers, layout = cached
            skipped.append(i)
        else:
            fdir.mkdir(parents=True, exist_ok=True)
            _clean_temps(fdir)
            key = None if capture_store is None else frame_key(source.name, i)
            frame = source.frame(i)
            tally = counts
            needs = capture_needs(spec, kinds, backend.num_steps)
            if capture_store is not None and key not in capture_store and not needs.all_heads:
                # Store first, then analyse the stored copy: a run resumed after this frame's capture
                # reached the store analyses that same (reduced, float16) copy, so both give one result.
                capture_frame(backend, frame, needs, seed=seed, store=capture_store, key=key, counts=counts)
                tally = {}
            result = compute_frame(
                backend, frame, spec, kinds=kinds, seed=seed, store=capture_store, key=key, counts=tally
            )
            render_figures(
                result, kinds, fdir, dpi=dpi, paths=paths, figure_options=figure_options, episode=source.name
            )
            scores, layers, layout = result.layer_scores(), result.layers, result.layout
            _save_scores(fdir / SCORES_FILE, scores, layers, layout, fingerprint, focus)
        bar.set_postfix_str(f"skipped {len(skipped)}" if skipped else "")
        focus_scores.append(scores[list(layers).index(focus)])
        layouts.append(layout)
        done.append(i)
        files[i] = {k: str(p) for k, p in paths.items()}
    bar.close()
    if counts.get("reused"):
        log(f"  captures: {counts['reused']} taken from the store {store}, {counts.get('computed', 0)} computed")
    if skipped:
        log(f"  resumed: {len(skipped)} of {len(indices)} frames were already written and were skipped")
    written = write_episode_views(
        source,
        np.stack(focus_scores),
        layouts,
        done,
        out,
        spec=spec,
        focus=focus,
        fps=fps,
        video=video,
        gif=gif,
        dpi=dpi,
        figure_options=figure_options,
    )
    keep = {Path(p) for per_frame in files.values() for p in per_frame.values()}
    keep |= {out / f"frame_{i:04d}" / SCORES_FILE for i in done} | set(written.values())
    stale = remove_stale_outputs(out, keep)
    if stale:
        log(f"  removed {len(stale)} stale files of an earlier run with other settings")
    summary = {
        "output_dir": str(out),
        "source": str(source.path),
        "episode": source.name,
        "prompt": prompt,
        "success": source.success,
        "model": backend.name,
        "spec": spec.to_dict(),
        "focus_layer": focus,
        "frames": done,
        "skipped": skipped,
        "store": None if store is None else str(store),
        "frame_files": files,
        "episode_files": {k: str(v) for k, v in written.items()},
    }
    from flowlens.io.files import write_json_atomic

    write_json_atomic(out / "episode.json", summary)
    return summary


def write_episode_views(
    source,
    scores: np.ndarray,
    layouts: Sequence[TokenLayout],
    indices: Sequence[int],
    out: Path,
    *,
    spec: AnalysisSpec,
    focus: int,
    fps: float = 2.0,
    video: bool = True,
    gif: bool = True,
    dpi: int = 110,
    figure_options: Mapping[str, object] | None = None,
) -> dict[str, Path]:
    """Attention over time (MP4 / GIF) and the per-frame group shares, from per-frame scores
    [frame, token]."""
    import matplotlib.pyplot as plt

    import flowlens.figures as ff
    from flowlens.figures.video import attention_video

    layout = layouts[0]
    written: dict[str, Path] = {}
    label = f"{spec.method_label} · {spec.query_label} · layer {focus}"
    if video or gif:
        images = [source.images(i) for i in indices]
        labels = [f"frame {i} · layer {focus} · {spec.method}" for i in indices]
        for fmt, wanted in (("mp4", video), ("gif", gif)):
            if wanted:
                written[fmt] = attention_video(
                    images,
                    scores,
                    list(layouts),
                    out / f"{VIDEO_NAME}.{fmt}",
                    fps=fps,
                    labels=labels,
                    value_label=spec.value_label,
                    smooth=bool((figure_options or {}).get("smooth", False)),
                )
    fig = ff.share_evolution(
        scores,
        layout,
        x_values=list(indices),
        xlabel="frame",
        kind="area" if len(indices) > 1 else "bar",
        title=f"share per token group over the episode · {label}",
    ).figure
    try:
        written["evolution_frames"] = ff.save_figure(fig, out / "attention_evolution_frames.png", dpi=dpi)
    finally:
        plt.close(fig)
    return written
