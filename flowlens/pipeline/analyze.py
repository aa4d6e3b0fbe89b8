"""Capture → scores: the chosen method over every layer (and step) for one query, ready to draw.

``analyze_capture(capture, spec)`` returns a ``FrameResult`` whose ``scores`` are float64
``[step, layer, token]`` over the layout (NaN at masked / padding tokens):

- raw: the query's attention row at layer l (heads fused per ``spec.heads``), read by
  ``flowlens.analysis.rows.read_rows``;
- rollout: the query's rollout after layer l (Abnar & Zuidema 2020, residual 0.5), i.e. how much of
  its representation at layer l traces back to each *input* token, for every step at once
  (``flowlens.analysis.step_rollout.rollout_all_steps``, the prefix work shared);
- flow: attention flow (max-flow) from the query to each input token through layers 0..l, as
  the share of the query's total flow (``flowlens.analysis.flow``); one max-flow problem per
  layer, so flow is computed for the requested layers only (``FrameResult.layers``);
- a method of the attribution registry ("norm", "alti", "value_zeroing", "alti_flow", ...; see
  ``flowlens.attribution.methods``), given the model backend (``backend=``) for its weights.

For several queries ("actions") scores are the mean over the queries. The result also keeps the
frame images, so ``flowlens.pipeline.render`` can draw it without the capture.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from flowlens.analysis.rows import read_rows
from flowlens.attribution.methods import METHODS as ATTRIBUTION_METHODS
from flowlens.core.capture import Capture
from flowlens.core.graph import TokenGraph
from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError
from flowlens.pipeline.spec import AnalysisSpec


@dataclasses.dataclass(frozen=True, eq=False)
class FrameResult:
    """One frame, analysed.

    Attributes:
      layout: the token layout of the frame's inference.
      spec: what was computed.
      scores: float64 [step, layer, token] (NaN at removed tokens).
      steps: denoising step of each entry of the step axis.
      times: flow-matching time of each of those steps.
      layers: model layer of each entry of the layer axis (every layer; the requested ones for flow).
      num_layers: depth of the model.
      step_scores: float64 [step, layer, token] at *every* denoising step (for the step figures),
        or None when only ``steps`` were computed; ``step_times`` are their flow times.
      head_scores: float64 [layer, head, token] raw attention of the query per head at the step
        asked for (the mean over ``steps`` for step='all'; every layer), or None when the capture
        kept only the mean over heads.
      action_attention: float64 [layer, horizon, token] raw attention rows of every action token at
        the step asked for (the mean over ``steps`` for step='all'; heads fused per spec), or None
        when the layout has no actions.
      images: camera name → uint8 [H, W, 3] frame as stored.
      frame_index: index of the frame in its episode (None for a lone image).
      prompt: the instruction.
      model: the backend's name ("synthetic", "tabletop", "pi0_libero", ...).
      actions: float32 [horizon, action_dim] predicted actions, or None.
      episode: name of the episode the frame came from ("" when unknown), for figure titles.
    """

    layout: TokenLayout
    spec: AnalysisSpec
    scores: np.ndarray
    steps: tuple[int, ...]
    times: tuple[float | None, ...]
    layers: tuple[int, ...]
    num_layers: int
    step_scores: np.ndarray | None = None
    step_times: tuple[float | None, ...] = ()
    head_scores: np.ndarray | None = None
    action_attention: np.ndarray | None = None
    images: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    frame_index: int | None = None
    prompt: str = ""
    model: str = "unknown"
    actions: np.ndarray | None = None
    episode: str = ""

    @property
    def step_label(self) -> str:
        if len(self.steps) == 1:
            t = self.times[0]
            return f"step {self.steps[0]}" + (f" (t={t:.2f})" if t is not None else "")
        return f"mean of {len(self.steps)} denoising steps"

    def layer_scores(self) -> np.ndarray:
        """float64 [layer, token]: the scores at the one step, or the mean over steps for step='all'."""
        return self.scores[0] if self.scores.shape[0] == 1 else np.mean(self.scores, axis=0)

    def scores_at(self, layer: int) -> np.ndarray:
        """float64 [token] at model layer ``layer`` (steps averaged for step='all')."""
        if layer not in self.layers:
            raise FlowlensError(
                f"layer {layer} out of range: the model has {self.num_layers} layers (valid: 0–{self.num_layers - 1})."
            )
        return self.layer_scores()[self.layers.index(layer)]

    @property
    def figure_layers(self) -> tuple[int, ...]:
        return self.spec.figure_layers(self.num_layers)

    @property
    def focus_layer(self) -> int:
        """The layer single-layer views (video, compare) show: the last requested layer."""
        return self.figure_layers[-1]


def _flow_scores(graph: TokenGraph, tokens: np.ndarray, layers) -> np.ndarray:
    """Attention flow through layers 0..l for each l of ``layers``, as the share of the query's flow.

    One exact max-flow problem per layer (``flowlens.analysis.flow``, rows normalised as in the
    paper); returns float64 [len(layers), token].
    """
    try:
        from flowlens.analysis.flow import flow
    except ImportError:
        raise FlowlensError(
            "--method flow needs flowlens.analysis.flow, which this installation does not have; use --method "
            "rollout or --method raw."
        ) from None
    out = []
    for layer in layers:
        pos = graph.layer_position(layer)
        sub = dataclasses.replace(graph, attention=graph.attention[: pos + 1], layers=graph.layers[: pos + 1])
        res = flow(sub, tokens, normalize=True)
        values = np.zeros(graph.num_nodes)
        values[graph.node_index(res.sources)] = res.values.mean(axis=0)
        out.append(graph.to_tokens(values))
    return np.stack(out)


def _attribution_scores(capture: Capture, spec: AnalysisSpec, tokens, steps, backend, gradient_inputs):
    """([step][layer, token] scores, layers) of a registry method (``flowlens.attribution``)."""
    method = ATTRIBUTION_METHODS[spec.method]
    model, params = getattr(backend, "model", None), getattr(backend, "params", None)
    if model is None or params is None:
        raise FlowlensError(
            f"--method {spec.method} reads the model's weights, but the backend "
            f"{getattr(backend, 'name', backend)!r} has no model and parameters; run it on a checkpoint or "
            "builtin:tabletop (pass backend= to compute_scores).")
    layers = None if spec.method != "alti_flow" else spec.figure_layers(capture.num_layers)
    inputs = dict(gradient_inputs or {})
    result = method(model, params, inputs.get("obs"), capture, query=tokens, steps=steps, layers=layers,
                    noise=inputs.get("noise"), target=inputs.get("target"))
    return list(result.values), result.layers


def analyze_capture(capture: Capture, spec: AnalysisSpec, **options) -> FrameResult:
    """Compute ``spec`` on one capture, after checking it against the capture's model.

    Args:
      capture: prefix pass and every valid row (rollout / flow), or the suffix rows (raw), for the
        steps 0 … the step asked for.
      spec: method, query, heads, step, layers.
      **options: ``images``, ``frame_index``, ``prompt``, ``every_step`` of ``compute_scores``.
    Returns:
      FrameResult with scores [step, layer, token].
    Raises:
      FlowlensError: layers / heads / step out of the model's range, a query the layout lacks, a
        capture that misses what the method needs.
    """
    spec.check_model(num_layers=capture.num_layers, num_heads=capture.num_heads, num_steps=capture.num_steps or None)
    return compute_scores(capture, spec, **options)


def compute_scores(
    capture: Capture,
    spec: AnalysisSpec,
    *,
    images: Mapping[str, np.ndarray] | None = None,
    frame_index: int | None = None,
    prompt: str | None = None,
    every_step: bool = False,
    backend=None,
    gradient_inputs: Mapping[str, object] | None = None,
) -> FrameResult:
    """``analyze_capture`` for a spec already checked against the model (``AnalysisSpec.check_model``
    runs once per run, where the backend is known; this runs once per frame).

    Args:
      images: camera → uint8 frame (kept for the figures).
      frame_index, prompt: kept in the result (the prompt defaults to the capture's metadata).
      every_step: also compute the scores at every recorded denoising step (``step_scores``).
      backend: the model backend (``model``, ``params``) for the attribution registry's methods.
      gradient_inputs: for the gradient methods (relevancy, ig): ``obs`` (the Observation the
        capture was made from), ``noise`` (its initial noise, float32 [1, H_a, action_dim]) and
        optionally ``target`` (an ActionTarget; default ``attribution.gradient_methods.default_target``).
    Returns:
      FrameResult with scores float64 [step, layer, token], NaN at masked / padding tokens.
    """
    layout = capture.layout
    tokens = spec.query_tokens(layout)
    steps = spec.step_indices(capture.num_steps)
    heads = spec.heads_argument
    computed = tuple(range(capture.num_steps)) if every_step else steps
    if spec.method == "raw":
        rows = [read_rows(capture, tokens, step=s, heads=heads) for s in computed]
        per_step = [r.on_layout()[:, 0].mean(axis=1) for r in rows]  # [step][layer, token]
        layers = rows[0].layers
    elif spec.method == "rollout":
        from flowlens.analysis.step_rollout import rollout_all_steps

        r = rollout_all_steps(capture, heads=heads, residual=spec.residual, query=tokens, steps=list(computed))
        per_step = list(_nan_masked(r.values.mean(axis=2), layout))  # [step][layer, token]
        layers = r.layers
    elif spec.method in ATTRIBUTION_METHODS:
        per_step, layers = _attribution_scores(capture, spec, tokens, computed, backend, gradient_inputs)
    else:  # flow: one max-flow problem per layer, so only the layers the figures show
        layers = spec.figure_layers(capture.num_layers)
        per_step = [
            _flow_scores(TokenGraph.from_capture(capture, s, heads=heads, residual=spec.residual), tokens, layers)
            for s in computed
        ]
    if spec.method in ("raw", "rollout") and tuple(layers) != tuple(range(capture.num_layers)):
        missing = sorted(set(range(capture.num_layers)) - set(layers))
        raise FlowlensError(f"the capture did not record layers {missing}; record every layer for the figures.")
    first = steps[0]
    head_scores = None
    p = capture.step(first)
    if p.head_reduction is None:  # per head, averaged over the steps asked for (step='all': every step)
        head_scores = np.mean(
            [read_rows(capture, tokens, step=s, heads="keep").on_layout().mean(axis=2) for s in steps], axis=0
        )
    action_attention = None
    act = layout.actions
    if act is not None:
        act_tokens = np.arange(act.start, act.stop)
        if np.isin(act_tokens, p.query_rows).all():
            action_attention = np.mean(
                [read_rows(capture, act_tokens, step=s, heads=heads).on_layout()[:, 0] for s in steps], axis=0
            )
    times = capture.times
    all_scores = np.stack(per_step)
    return FrameResult(
        layout=layout,
        spec=spec,
        scores=all_scores[[computed.index(s) for s in steps]],
        steps=steps,
        times=tuple(times[s] for s in steps),
        layers=tuple(layers),
        num_layers=capture.num_layers,
        step_scores=all_scores if every_step else None,
        step_times=tuple(times) if every_step else (),
        head_scores=head_scores,
        action_attention=action_attention,
        images=dict(images or {}),
        frame_index=frame_index,
        prompt=prompt or str(capture.metadata.get("prompt", "")),
        model=capture.model,
        actions=capture.actions,
    )


def _nan_masked(values: np.ndarray, layout: TokenLayout) -> np.ndarray:
    """float64 copy of ``[..., token]`` values with NaN at masked / padding tokens."""
    out = np.array(values, dtype=np.float64)
    out[..., ~layout.valid] = np.nan
    return out
