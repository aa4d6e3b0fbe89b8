"""Frames of an episode → the interactive HTML report (``flowlens.report``).

For each frame the report embeds, for the query of the spec, over every denoising step and layer:
raw attention per head (plus their mean), rollout (mean over heads), and attention flow when
``flowlens.analysis.flow`` provides it (at the spec's step, after the last layer: one max-flow
problem per layer is too slow for every slider position; the report holds it constant). Sliders
pick frame / step / layer / head; the method switch picks raw / rollout / flow, and the attribution
registry's methods asked for (``--methods alti norm ...``: every step, every layer, like rollout;
"alti_flow" like flow, at the spec's step after the last layer; they need a model backend).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from flowlens.attribution.methods import METHODS as ATTRIBUTION_METHODS
from flowlens.errors import FlowlensError
from flowlens.pipeline.analyze import compute_scores
from flowlens.pipeline.backends import CaptureNeeds
from flowlens.pipeline.frames import gradient_inputs
from flowlens.pipeline.sources import source_prompt
from flowlens.pipeline.spec import AnalysisSpec


def flow_available() -> bool:
    try:
        from flowlens.analysis import flow

        return hasattr(flow, "flow")
    except ImportError:
        return False


REPORT_METHODS = ("raw", "rollout", "flow") + tuple(ATTRIBUTION_METHODS)


def check_methods(methods) -> tuple[str, ...]:
    """Validate report methods; "flow" is dropped (with no error) when the flow module is absent."""
    from flowlens.errors import unknown_name_error

    methods = tuple(dict.fromkeys(methods))
    for m in methods:
        if m not in REPORT_METHODS:
            raise unknown_name_error("methods", m, REPORT_METHODS)
    if not methods:
        raise FlowlensError(f"methods is empty; give some of {list(REPORT_METHODS)}.")
    return tuple(m for m in methods if m != "flow" or flow_available())


def _report_frame(backend, frame, spec: AnalysisSpec, *, seed: int = 0, methods=REPORT_METHODS):
    """One ``ReportFrame`` (``flowlens.report.report_frame``) of one source frame: raw per head +
    mean and rollout at every step; flow (spec checked already) at the spec's step, last layer."""
    from flowlens.report import report_frame

    attribution = [m for m in methods if m in ATTRIBUTION_METHODS]
    residual = any("residual" in ATTRIBUTION_METHODS[m].needs for m in attribution)
    needs = CaptureNeeds(steps=tuple(range(backend.num_steps)), graph=True, all_heads=True, residual=residual)
    capture = backend.capture(frame, needs, seed=seed)
    extra = {}
    for m in attribution:
        if m == "alti_flow":  # max-flow per layer: the last layer at the spec's step, as flow
            last = (capture.num_layers - 1,)
            res = compute_scores(capture, dataclasses.replace(spec, method=m, heads=None, layers=last), backend=backend)
            extra[m] = res.scores[:, :, None, :]
        else:
            res = compute_scores(capture, dataclasses.replace(spec, method=m, heads=None, step=0), backend=backend,
                                 every_step=capture.num_steps > 1,
                                 gradient_inputs=gradient_inputs(backend, frame, m, seed=seed))
            extra[m] = (res.scores if res.step_scores is None else res.step_scores)[:, :, None, :]
    if "flow" in methods:
        last = (capture.num_layers - 1,)  # one max-flow problem per layer: after the last layer only
        fl = compute_scores(capture, dataclasses.replace(spec, method="flow", heads=None, layers=last))
        extra["flow"] = fl.scores[:, :, None, :]
    return report_frame(
        capture,
        frame.images,
        label=f"frame {frame.index}",
        query=spec.query_tokens(capture.layout),
        methods=[m for m in methods if m in ("raw", "rollout")],
        extra=extra,
        residual=spec.residual,
    )


def build_episode_report(
    source,
    backend,
    spec: AnalysisSpec,
    *,
    frames: Sequence[int],
    output: str | os.PathLike = "report.html",
    seed: int = 0,
    progress: bool = True,
    methods=REPORT_METHODS,
    interpolation: str = "nearest",
) -> Path:
    """Write the interactive report of ``frames`` of one episode; returns the path.

    ``interpolation``: how the frame view draws the heatmap, "nearest" (the patch grid, as the
    model view) or "bilinear" (smoothed), as ``--interpolation`` for the figures.

    Raises:
      FlowlensError: an output not ending in .html, frames out of range, a missing prompt, a report
        above the size bound (fewer frames help).
    """
    import sys

    from tqdm.auto import tqdm

    from flowlens.report import write_report

    path = Path(output)
    if path.suffix.lower() not in (".html", ".htm"):
        raise FlowlensError(f"--output {str(output)!r} must end in .html (the report is one HTML file).")
    prompt = source_prompt(source)
    indices = [source.check_index(i) for i in frames]
    if not indices:
        raise FlowlensError("no frames to report; pass --frames (e.g. --frames 0 10 20).")
    spec.check_model(num_layers=backend.num_layers, num_heads=backend.num_heads, num_steps=backend.num_steps)
    methods = check_methods(methods)
    path.parent.mkdir(parents=True, exist_ok=True)
    rframes = [
        _report_frame(backend, source.frame(i), spec, seed=seed, methods=methods)
        for i in tqdm(indices, desc="report", unit="frame", disable=not progress, file=sys.stderr)
    ]
    times = [str(s) for s in range(backend.num_steps)]  # the page says "step <label>"
    outcome = {True: " · success", False: " · failure"}.get(source.success, "")
    return write_report(
        path,
        rframes,
        title=f"{prompt} · {source.name}{outcome}",
        query=spec.query_label,
        source=str(source.path),
        layer_ids=list(range(backend.num_layers)),
        step_labels=times,
        head_labels=["mean"] + [f"head {h}" for h in range(backend.num_heads)],
        method_labels={m.name: m.label for m in ATTRIBUTION_METHODS.values()},
        interpolation=interpolation,
    )
