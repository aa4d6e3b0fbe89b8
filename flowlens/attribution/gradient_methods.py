"""Gradient methods behind the registry: Chefer relevancy and Integrated Gradients of one captured run.

Both differentiate a scalar target of the sampled chunk (an ``ActionTarget``) through the real
sampler from the captured run's initial noise, so the map explains the actions the capture shows.
The default target, usable with any checkpoint (no task knowledge), is :func:`default_target`: the
first action of the captured chunk projected on its own direction (the direction held fixed), i.e.
"how far the first action moves the way it did". Where the task is known, pass a better one (the
benchmark uses ``ActionTarget.heading`` towards the named object).

Both return ``Attribution`` values float64 [step, layer, token]; the map is of the whole model (the
relevancy after the last layer; IG of the input embeddings), so every requested layer holds it.
Loading this module loads JAX (through ``flowlens.model.gradients``).
"""

from __future__ import annotations

import numpy as np

from flowlens.attribution.integrated_gradients import integrated_gradients
from flowlens.attribution.methods import Attribution
from flowlens.attribution.relevancy import chefer_relevancy
from flowlens.core.capture import Capture
from flowlens.errors import FlowlensError

IG_STEPS = 8  # uniform path intervals of the registry's ``ig`` (the benchmark uses 16 + 16 refined)


def default_target(capture: Capture):
    """ActionTarget: Σ_d u_d · a[0, d], u = the captured first action a₀ / ‖a₀‖ (model space, held fixed)."""
    from flowlens.model.gradients import ActionTarget

    if capture.actions is None:
        raise FlowlensError("the default gradient target reads the captured chunk, but capture.actions is None; "
                            "pass target=ActionTarget(...) or capture with sample_actions.")
    a0 = np.asarray(capture.actions, np.float64).reshape(-1, np.shape(capture.actions)[-1])[0]
    norm = float(np.linalg.norm(a0))
    if not np.isfinite(norm) or norm == 0.0:
        raise FlowlensError("the captured first action is zero or not finite, so it has no direction; pass "
                            "target=ActionTarget(...).")
    u = a0 / norm
    return ActionTarget(horizon=(0,), dims=tuple(range(a0.size)), coefficients=tuple(float(x) for x in u))


def parse_target(text: str):
    """ActionTarget from the CLI's ``--target``: "first-action" → None (``default_target`` of the
    capture), "dim:D" → dimension D of the first action, "heading:DX,DY" → ``ActionTarget.heading``."""
    from flowlens.model.gradients import ActionTarget

    text = str(text).strip()
    try:
        if text == "first-action":
            return None
        if text.startswith("dim:"):
            return ActionTarget(horizon=(0,), dims=(int(text[4:]),))
        if text.startswith("heading:"):
            dx, dy = (float(x) for x in text[8:].split(","))
            return ActionTarget.heading((dx, dy))
    except ValueError:
        pass
    raise FlowlensError(f"--target {text!r} is not known; expected first-action, dim:D (an int) or "
                        "heading:DX,DY (two numbers), e.g. --target dim:0.")


def _layers(capture: Capture, layers) -> tuple[int, ...]:
    return tuple(range(capture.num_layers)) if layers is None else tuple(layers)


def _target(capture: Capture, target):
    return default_target(capture) if target is None else target


def relevancy(model, params, obs, capture: Capture, *, query, steps, layers, noise, target=None) -> Attribution:
    """Chefer relevancy of ``query`` (int64 [q], summed) at each denoising step of ``steps``."""
    from flowlens.model.gradients import attention_gradients

    grads = attention_gradients(model, params, obs, _target(capture, target), noise=noise)
    layers = _layers(capture, layers)
    maps = [chefer_relevancy(grads, query, steps=[s]).token_scores() for s in steps]
    values = np.stack([np.repeat(m[None], len(layers), axis=0) for m in maps])
    return Attribution("relevancy", values, tuple(steps), layers)


def ig(model, params, obs, capture: Capture, *, query, steps, layers, noise, target=None) -> Attribution:
    """Integrated Gradients of the prefix embeddings (mean baseline, ``IG_STEPS`` intervals), one map
    for the whole chunk (the same at every step; ``query`` does not enter: the target is of the chunk)."""
    from flowlens.model.gradients import path_gradients

    res = integrated_gradients(path_gradients(model, params, obs, _target(capture, target), noise=noise,
                                              steps=IG_STEPS, batch=IG_STEPS + 1))
    layers = _layers(capture, layers)
    values = np.broadcast_to(res.token_scores, (len(steps), len(layers), res.token_scores.size)).copy()
    return Attribution("ig", values, tuple(steps), layers)
