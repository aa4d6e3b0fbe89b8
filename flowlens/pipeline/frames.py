"""One frame, end to end: source frame → capture → scores → figures.

backend = load_backend("synthetic")            # or "builtin:tabletop", or a checkpoint dir
source = open_source(video="rollout.mp4", prompt="pick up the bowl")
result = analyze_frame(backend, source.frame(10), AnalysisSpec(method="rollout"))
render_figures(result, expand_viz("all"), "attention.png")
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from flowlens.attribution.methods import METHODS as ATTRIBUTION_METHODS
from flowlens.errors import FlowlensError
from flowlens.pipeline.analyze import FrameResult, compute_scores
from flowlens.pipeline.backends import CaptureNeeds
from flowlens.pipeline.render import expand_viz, output_paths, render_figures
from flowlens.pipeline.sources import source_prompt
from flowlens.pipeline.spec import AnalysisSpec


def capture_needs(spec: AnalysisSpec, kinds: Sequence[str], num_steps: int) -> CaptureNeeds:
    """What the capture must hold for ``spec`` and the figures ``kinds``."""
    every = spec.step == "all" or "steps" in kinds
    steps = tuple(range(num_steps)) if every else spec.step_indices(num_steps)
    residual = spec.needs_residual
    return CaptureNeeds(steps=steps, graph=spec.method != "raw",
                        all_heads=residual or spec.heads is not None or "heads" in kinds, residual=residual)


def gradient_inputs(backend, frame, method: str, *, seed: int = 0, target=None) -> dict | None:
    """What a gradient method of the registry needs besides the capture: the frame's Observation and
    the run's noise for ``seed`` (so the gradients explain the captured run), plus ``target`` (an
    ActionTarget, a ``--target`` string, or None for the default); None for a method that needs no
    gradient."""
    if method not in ATTRIBUTION_METHODS or "gradient" not in ATTRIBUTION_METHODS[method].needs:
        return None
    if not hasattr(backend, "noise") or not hasattr(backend, "observation"):
        raise FlowlensError(f"--method {method} differentiates the model, but the backend "
                            f"{getattr(backend, 'name', backend)!r} has no model; use a checkpoint or builtin:tabletop.")
    if isinstance(target, str):
        from flowlens.attribution.gradient_methods import parse_target  # JAX, loaded on use

        target = parse_target(target)
    return {"obs": backend.observation(frame), "noise": backend.noise(seed), "target": target}


def capture_holds(capture, needs: CaptureNeeds) -> bool:
    """True when ``capture`` has what ``needs`` asks for (to reuse a stored capture)."""
    if needs.graph and capture.prefix is None:
        return False
    if needs.steps and capture.num_steps <= max(needs.steps):
        return False
    if needs.residual and any(p.residual is None for p in capture.passes):
        return False
    return not (needs.all_heads and any(p.head_reduction is not None for p in capture.passes))


def capture_frame(
    backend,
    frame,
    needs: CaptureNeeds,
    *,
    seed: int = 0,
    store=None,
    key: str | None = None,
    counts: dict | None = None,
):
    """``backend.capture``, or the capture kept in ``store`` under ``key`` when it holds what is
    needed and came from the same model and seed; new captures are put into the store.
    ``counts`` (optional) tallies "reused" and "computed"."""
    counts = {} if counts is None else counts
    if store is not None and key in store:
        meta = store.info(key).metadata or {}
        if meta.get("flowlens_model") == backend.name and meta.get("flowlens_seed") == seed:
            cached = store.get(key)
            if capture_holds(cached, needs):
                counts["reused"] = counts.get("reused", 0) + 1
                return cached
    counts["computed"] = counts.get("computed", 0) + 1
    capture = backend.capture(frame, needs, seed=seed)
    if store is not None:
        meta = {**capture.metadata, "flowlens_model": backend.name, "flowlens_seed": seed}
        store.put(key, dataclasses.replace(capture, metadata=meta), overwrite=True)
    return capture


def analyze_frame(backend, frame, spec: AnalysisSpec, **options) -> FrameResult:
    """Check ``spec`` against ``backend``, capture ``frame`` and compute ``spec`` (``compute_frame``).

    Args:
      backend: from ``load_backend``.
      frame: a ``flowlens.io.sources.Frame`` (images, prompt, state, transforms).
      spec: the analysis.
      **options: ``kinds``, ``seed``, ``store``, ``key``, ``counts`` of ``compute_frame``.
    """
    spec.check_model(num_layers=backend.num_layers, num_heads=backend.num_heads, num_steps=backend.num_steps)
    return compute_frame(backend, frame, spec, **options)


def compute_frame(
    backend,
    frame,
    spec: AnalysisSpec,
    *,
    kinds: Sequence[str] = (),
    seed: int = 0,
    store=None,
    key: str | None = None,
    counts: dict | None = None,
    target=None,
) -> FrameResult:
    """Capture ``frame`` with ``backend`` and compute ``spec`` (plus what ``kinds`` of figures need),
    for a spec already checked against ``backend`` (``check_model`` runs once per run).

    Args:
      kinds: figure types that will be drawn ("steps" needs every step, "heads" every head).
      seed: noise seed of the sampler (and of the synthetic attention).
      store: a ``flowlens.io.store`` CaptureStore to reuse / keep captures in (under ``key``).
      counts: tallies captures "reused" from the store and "computed" by the backend.
      target: the gradient methods' target (ActionTarget or ``--target`` string; None: default).
    """
    needs = capture_needs(spec, kinds, backend.num_steps)
    capture = capture_frame(backend, frame, needs, seed=seed, store=store, key=key, counts=counts)
    return compute_scores(
        capture,
        spec,
        images=frame.images,
        frame_index=frame.index,
        prompt=frame.prompt,
        every_step=len(needs.steps) > 1 and (spec.step == "all" or "steps" in kinds),
        backend=backend,
        gradient_inputs=gradient_inputs(backend, frame, spec.method, seed=seed, target=target),
    )


def run_single(
    source,
    frame_index: int,
    backend,
    spec: AnalysisSpec,
    *,
    viz: Sequence[str] | str = "all",
    output: str | os.PathLike = "attention.png",
    seed: int = 0,
    dpi: int = 110,
    prompt_flag: str = "--prompt",
    figure_options: Mapping[str, object] | None = None,
    target=None,
) -> dict[str, Path]:
    """The ``flowlens single`` command: one frame of one episode → the chosen figures.

    Everything is checked (frame range, layers, prompt, output names) before the model runs, and
    every file is written atomically, so a failure leaves no partial output.

    Returns:
      {viz type: path written}.
    """
    kinds = expand_viz(viz)
    paths = output_paths(output, kinds)
    index = source.check_index(frame_index)
    source_prompt(source, prompt_flag)
    frame = source.frame(index)
    result = analyze_frame(backend, frame, spec, kinds=kinds, seed=seed, target=target)
    return render_figures(
        result, kinds, output, dpi=dpi, paths=paths, figure_options=figure_options, episode=source.name
    )


def frame_indices(num_frames: int, frames: Sequence[int] | None, frame_step: int | None) -> list[int]:
    """The frames an episode run visits: ``frames`` (checked, negatives from the end) or every
    ``frame_step``-th."""
    if frames:
        out = []
        for f in frames:
            if not -num_frames <= int(f) < num_frames:
                raise FlowlensError(
                    f"frame {f} out of range: the episode has {num_frames} frames (valid: 0–{num_frames - 1})."
                )
            i = int(f) % num_frames
            if i not in out:
                out.append(i)
        return out
    step = 10 if frame_step is None else int(frame_step)
    if step <= 0:
        raise FlowlensError(f"--frame-step must be a positive number of frames, got {step}.")
    return list(range(0, num_frames, step))
