"""FrameResult → figures on disk: the ``--viz-type`` PNGs, written atomically.

Viz types (``--viz-type``, several allowed):

    image      attention_image.png      heatmaps on the frame, one row per requested layer
    text       attention_text.png       word bars, layers × words, highlighted prompt (sinks apart)
    combined   attention_combined.png   frame heatmap + words + statistics at the focus layer
    evolution  attention_evolution.png  share of the query's mass per token group across all layers
    steps      attention_steps.png      heatmaps and group shares per denoising step (focus layer)
    heads      attention_heads.png      layers × heads heatmaps (raw attention per head)
    actions    attention_actions.png    action-to-action attention per layer
    all        the first four (what the legacy script wrote); full: every type

With one type and an ``--output`` file name, that file is written; otherwise ``<stem>_<type>.png``
next to it (``attention.png`` → ``attention_image.png``, ...).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from flowlens.errors import FlowlensError, short_text, unknown_name_error
from flowlens.figures.config import LEGACY_VIZ_TYPES, VIZ_TYPES
from flowlens.pipeline.analyze import FrameResult

VIZ_CHOICES = (*VIZ_TYPES, "all", "full")


def expand_viz(values: str | Iterable[str]) -> tuple[str, ...]:
    """Resolve ``--viz-type`` values: "all" → the legacy four, "full" → every type; order kept, no repeats."""
    values = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for v in values:
        if v not in VIZ_CHOICES:
            raise unknown_name_error("viz-type", v, VIZ_CHOICES)
        for kind in LEGACY_VIZ_TYPES if v == "all" else VIZ_TYPES if v == "full" else (v,):
            if kind not in out:
                out.append(kind)
    return tuple(out)


def names_a_folder(output: str | os.PathLike) -> bool:
    """An ``--output`` that ends with a separator, is an existing folder, or has no suffix."""
    text = os.fspath(output)
    return text.endswith(("/", os.sep)) or Path(text).is_dir() or not Path(text).suffix


def output_paths(output: str | os.PathLike, kinds: Sequence[str]) -> dict[str, Path]:
    """Where each figure goes: ``output`` itself for one type, else ``<stem>_<type>.png`` beside it.

    ``output`` may be a directory (ends with a separator or exists as one): files are then named
    ``attention_<type>.png`` inside it.
    """
    text = os.fspath(output)
    path = Path(text)
    if names_a_folder(output):
        return {k: path / f"attention_{k}.png" for k in kinds}
    if path.suffix.lower() not in (".png", ".pdf", ".svg", ".jpg", ".jpeg"):
        raise FlowlensError(f"--output {text!r} must end in .png (or .pdf, .svg, .jpg); got suffix {path.suffix!r}.")
    if len(kinds) == 1:
        return {kinds[0]: path}
    return {k: path.with_name(f"{path.stem}_{k}{path.suffix}") for k in kinds}


def check_writable(folder: str | os.PathLike, flag: str) -> Path:
    """Fail now, before any model work, when figures cannot be written under ``folder``.

    The folder need not exist yet (it is created later); its nearest existing ancestor must be a
    folder in which a file can be created (probed with a hidden temporary file, removed at once).
    Returns the folder; raises FlowlensError naming ``flag`` and the user's path.
    """
    import tempfile

    folder = Path(os.fspath(folder) or ".")
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise FlowlensError(
            f"{flag} {str(folder)!r} cannot be created: {str(probe)!r} is a file, not a folder. "
            f"Choose another {flag}."
        )
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".flowlens-write-check-")
    except OSError as e:
        raise FlowlensError(
            f"{flag} {str(folder)!r} is not writable ({e.strerror or e} in {str(probe)!r}); choose another "
            f"{flag} or make that folder writable."
        ) from None
    os.close(fd)
    os.unlink(name)
    return folder


def figure_config(result: FrameResult, **overrides):
    """The FigureConfig whose titles say method, query, heads and step(s) of ``result``."""
    from flowlens.figures import FigureConfig

    spec = result.spec
    method = spec.method_label + ("" if len(result.steps) == 1 else f" ({result.step_label})")
    return FigureConfig(
        layers=result.figure_layers,
        heads=spec.heads,
        query=spec.query_label,
        method=method,
        value_label=spec.value_label,
        **overrides,
    )


def truncation_note(result: FrameResult) -> str | None:
    """What the model saw of a prompt longer than its token budget (openpi truncates and the "\\n"
    answer marker is lost), or None when the whole prompt fit."""
    text = result.layout.text
    if text is None:
        return None
    seen = [r for r, ok in zip(text.roles, text.valid, strict=True) if ok]
    if "newline" in seen or len(seen) < text.size:
        return None
    words = " ".join(text.words)
    shown = words if len(words) <= 60 else words[:60] + "…"
    return f"prompt truncated to {len(seen)} tokens: the model saw only {len(text.words)} words, {shown!r}"


def _step(result: FrameResult) -> int | None:
    return result.steps[0] if len(result.steps) == 1 else None


def make_figure(kind: str, result: FrameResult, config=None):
    """Build one figure (not saved) with the ``flowlens.figures`` composer of ``kind``.

    Under the title: which frame of which episode (``result.episode``) with which prompt, so a
    PNG on its own says what it shows; and, for the image, text and combined figures, a prompt the
    model saw truncated. Raises FlowlensError when the result lacks what ``kind`` needs.
    """
    fig = _compose(kind, result, config)
    lines = [fig.get_suptitle()] if fig.get_suptitle() else []
    where = [f"episode {result.episode}"] if result.episode else []
    if result.frame_index is not None:
        where.append(f"frame {result.frame_index}")
    if result.prompt:
        where.append(f"prompt {short_text(result.prompt, 80)}")
    if where:
        lines.append(" · ".join(where))
    note = truncation_note(result)
    if note and kind in ("image", "text", "combined"):
        lines.append(note)
    if lines:
        fig.suptitle("\n".join(lines), fontsize=10)
    return fig


def _compose(kind: str, result: FrameResult, config=None):
    import flowlens.figures as ff

    config = config or figure_config(result)
    scores = result.layer_scores()
    layout, images, ids = result.layout, result.images, list(result.layers)
    step = _step(result)
    if kind == "image":
        return ff.attention_image_figure(scores, layout, images, layer_ids=ids, config=config, step=step)
    if kind == "text":
        return ff.attention_text_figure(scores, layout, layer_ids=ids, config=config, step=step)
    if kind == "combined":
        return ff.attention_combined_figure(scores, layout, images, layer_ids=ids, config=config, step=step)
    if kind == "evolution":
        return ff.attention_evolution_figure(
            scores, layout, layer_ids=ids, config=dataclasses.replace(config, layers=None), step=step
        )
    if kind == "steps":
        if result.step_scores is None:
            raise FlowlensError("the steps figure needs the scores at every denoising step; run with --step all.")
        layer = result.focus_layer
        return ff.steps_figure(
            result.step_scores[:, ids.index(layer)],
            layout,
            images,
            layer=layer,
            times=result.step_times,
            config=dataclasses.replace(config, method=result.spec.method_label),
        )
    if kind == "heads":
        if result.head_scores is None:
            raise FlowlensError("the heads figure needs every head recorded; the capture kept only their mean.")
        return ff.heads_figure(
            result.head_scores,
            layout,
            images,
            layer_ids=ids,
            layers=result.figure_layers,
            query_label=result.spec.query_label,
            step=result.step_label,
            config=config,
            cameras=[c.name for c in result.layout.cameras if c.valid] or None,
        )
    if kind == "actions":
        if result.action_attention is None:
            raise FlowlensError("the actions figure needs the action tokens' rows; this capture has none.")
        return ff.actions_figure(
            result.action_attention,
            layout,
            layer_ids=ids,
            layers=result.figure_layers,
            step=result.step_label,
            heads_label=result.spec.heads_label,
        )
    raise unknown_name_error("viz-type", kind, VIZ_TYPES)


def render_figures(
    result: FrameResult,
    kinds: Sequence[str],
    output: str | os.PathLike,
    *,
    dpi: int = 110,
    paths: dict[str, Path] | None = None,
    figure_options: Mapping[str, object] | None = None,
    episode: str | None = None,
) -> dict[str, Path]:
    """Draw and atomically write each figure of ``kinds``; returns {kind: path}.

    ``figure_options``: FigureConfig fields the user chose (``smooth``, ``camera_scale``). Unlike
    the library's FigureConfig, heatmaps here default to the patch grid as the model saw it (one
    flat block per patch, ``smooth=False``), as the HTML report shows it.

    A figure that fails leaves no file behind (and nothing half-written), and the error propagates.
    """
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg", force=False)  # headless runs; a backend already chosen (a notebook's) stays
    import matplotlib.pyplot as plt

    from flowlens.figures import save_figure

    paths = paths or output_paths(output, kinds)
    for p in {p.parent for p in paths.values()}:
        p.mkdir(parents=True, exist_ok=True)
    if episode:
        result = dataclasses.replace(result, episode=episode)
    config = figure_config(result, **{"smooth": False, **(figure_options or {}), "dpi": dpi})
    written = {}
    for kind in kinds:
        fig = make_figure(kind, result, config)
        try:
            written[kind] = save_figure(fig, paths[kind], dpi=dpi)
        finally:
            plt.close(fig)
    return written
