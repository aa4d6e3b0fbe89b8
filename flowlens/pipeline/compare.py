"""Success vs failure: the same prompt, the same frame index, one colour scale, side by side.

``compare_episodes`` runs the same analysis on frame ``i`` of a successful and of a failed episode
of one task and writes ``flowlens.figures.compare_outcomes`` (both heatmaps on one scale, their
difference, paired word bars with the sinks apart) for each frame index asked for.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from flowlens.errors import FlowlensError
from flowlens.pipeline.frames import compute_frame
from flowlens.pipeline.render import names_a_folder
from flowlens.pipeline.sources import source_prompt
from flowlens.pipeline.spec import AnalysisSpec


def _norm(prompt: str) -> str:
    return " ".join(prompt.replace("_", " ").lower().split())


def compare_paths(output: str | os.PathLike, frames: Sequence[int], prompt: str = "") -> dict[int, Path]:
    """``compare.png`` for one frame; ``compare_frame0010.png`` … for several; inside a folder,
    ``compare_<prompt>_frame0010.png`` with the prompt made file-name safe (it cannot leave the folder)."""
    from flowlens.io.files import safe_name

    text = os.fspath(output)
    path = Path(text)
    if names_a_folder(output):
        stem = "compare" + (f"_{safe_name(prompt, max_len=80)}" if prompt else "")
        return {i: path / f"{stem}_frame{i:04d}.png" for i in frames}
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise FlowlensError(f"--output {text!r} must end in .png (or .pdf, .svg); got {path.suffix!r}.")
    if len(frames) == 1:
        return {frames[0]: path}
    return {i: path.with_name(f"{path.stem}_frame{i:04d}{path.suffix}") for i in frames}


def compare_episodes(
    success,
    failure,
    backend,
    spec: AnalysisSpec,
    *,
    frames: Sequence[int],
    output: str | os.PathLike = "compare.png",
    seed: int = 0,
    dpi: int = 110,
    smooth: bool = False,
) -> dict[int, Path]:
    """Write one comparison figure per frame index.

    Args:
      success, failure: EpisodeSources of the same task (same prompt).
      frames: frame indices, each valid in both episodes.
      output: a .png path (one frame) or a folder / stem for several.
      smooth: bilinear heatmaps (default: the patch grid, one flat block per patch).
    Returns:
      {frame index: path}.
    Raises:
      FlowlensError: different prompts, a frame index out of range in either episode.
    """
    import matplotlib.pyplot as plt

    import flowlens.figures as ff

    p_s = source_prompt(success)  # one --prompt gives both episodes their instruction
    p_f = source_prompt(failure)
    if _norm(p_s) != _norm(p_f):
        raise FlowlensError(
            f"success and failure episodes have different prompts ({p_s!r} vs {p_f!r}); compare two "
            "episodes of the "
            "same task, or pass --prompt to give both the same instruction."
        )
    for src, what in ((success, "success"), (failure, "failure")):
        for i in frames:
            n = len(src)
            if not -n <= int(i) < n:
                raise FlowlensError(
                    f"frame {i} out of range for the {what} episode {src.name!r}: it has {n} frames "
                    f"(valid: 0–{n - 1}). Pick a frame index both episodes have."
                )
    spec.check_model(num_layers=backend.num_layers, num_heads=backend.num_heads, num_steps=backend.num_steps)
    paths = compare_paths(output, list(frames), p_s)
    for p in {p.parent for p in paths.values()}:
        p.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, path in paths.items():
        rs = compute_frame(backend, success.frame(i), spec, seed=seed)
        rf = compute_frame(backend, failure.frame(i), spec, seed=seed)
        layer = rs.focus_layer
        title = (
            f"success vs failure · frame {i} · {spec.method_label} · query: {spec.query_label} · "
            f"layer {layer} · "
            f"{rs.step_label} · {spec.heads_label}\n{p_s!r}"
        )
        fig = ff.outcome_figure(
            rs.scores_at(layer),
            rf.scores_at(layer),
            (rs.layout, rf.layout),
            (rs.images, rf.images),
            frame_index=i,
            value_label=spec.value_label,
            title=title,
            smooth=smooth,
        )
        try:
            written[i] = ff.save_figure(fig, path, dpi=dpi)
        finally:
            plt.close(fig)
    return written
