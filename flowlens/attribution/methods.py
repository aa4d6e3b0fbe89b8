"""The registry of attribution methods: name → how to score input tokens, and what it needs.

Every method has one interface (so the CLI, the report and the faithfulness benchmark call them
alike)::

    result = METHODS["alti"](model, params, obs, capture, query="action:0", steps=(0,))
    result.values   # float64 [step, layer, token]: score of each input token after each layer
    attribute("alti", model, params, obs, capture)   # float64 [token]: last layer, first step

``needs`` says what the run must provide: "residual" (``CaptureConfig(residual=True)``, every head,
all valid rows), "gradient" (a differentiable model call: ``obs`` must be given), "obs". A method
whose need is missing raises a FlowlensError naming the fix. ``METHODS`` is a read-only mapping built
once at import; a caller wanting another method builds a ``Method`` and calls it directly.

Methods here (value-based, :mod:`flowlens.attribution.passes`):

- ``norm``: Kobayashi et al. 2020 fused ‖g ⊙ Σ_h α v W_O‖ per layer, rows normalised, rolled out
  like attention rollout with the residual weight ``residual`` (0.5 as Abnar & Zuidema);
- ``alti``: Ferrando et al. 2022, rolled out without an added identity (ALTI's matrices already
  hold the residual term) — ALTI's own aggregation;
- ``value_zeroing``: Mohebbi et al. 2023, rolled out likewise;
- ``alti_flow``: attention flow (max-flow) over ALTI capacities — the flow variant that tells
  queries apart (classic flow on attention saturates at the source's layer-0 in-capacity).

Gradient methods (:mod:`flowlens.attribution.gradient_methods`) differentiate a scalar ``target``
of the sampled chunk through the real sampler, from the run's ``noise`` (so they explain the
capture shown): ``relevancy`` (Chefer et al. 2021) and ``ig`` (Integrated Gradients on the prefix
embeddings). Their map is of the whole model, so every layer of ``values`` holds it. Default
target: :func:`~flowlens.attribution.gradient_methods.default_target`.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Sequence

import numpy as np

from flowlens.analysis.step_rollout import rollout_all_steps
from flowlens.core.capture import Capture
from flowlens.core.graph import TokenGraph
from flowlens.core.query import select_query
from flowlens.errors import FlowlensError, unknown_name_error

NEEDS = ("residual", "gradient", "obs")


@dataclasses.dataclass(frozen=True, eq=False)
class Attribution:
    """Token scores of one method for one query.

    Attributes:
      method: the registry name.
      values: float64 [step, layer, token] over the layout (NaN at masked / padding tokens).
      steps: denoising step of each entry of the step axis.
      layers: model layer of each entry of the layer axis.
    """

    method: str
    values: np.ndarray
    steps: tuple[int, ...]
    layers: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Method:
    """One registered method.

    Attributes:
      name: registry key ("alti").
      label: how figures name it ("ALTI").
      value_label: what its numbers are ("ALTI contribution").
      needs: what the run must provide (subset of ``NEEDS``).
      compute: ``(model, params, obs, capture, *, query: int64 [q], steps, layers, noise, target)
        -> Attribution``.
    """

    name: str
    label: str
    value_label: str
    needs: tuple[str, ...]
    compute: Callable[..., Attribution]

    def __call__(self, model, params, obs, capture: Capture, *, query="action:0", steps: Sequence[int] = (0,),
                 layers: Sequence[int] | None = None, noise=None, target=None) -> Attribution:
        """Scores of ``query`` (a query name or int64 [q] tokens) at denoising ``steps``.

        ``noise``: float32 [1, H_a, action_dim], the initial noise of the captured run (gradient
        methods); ``target``: an ``ActionTarget`` (gradient methods; None: ``default_target``).
        """
        if capture is None or not isinstance(capture, Capture):
            raise FlowlensError(f"method {self.name!r} needs a Capture of the run, got {type(capture).__name__}.")
        if "obs" in self.needs or "gradient" in self.needs:
            if obs is None:
                raise FlowlensError(f"method {self.name!r} needs the observation (obs=...) to differentiate the "
                                    "model; pass the Observation the capture was made from.")
        if "gradient" in self.needs and noise is None:
            raise FlowlensError(f"method {self.name!r} needs a gradient through the sampler from the captured run's "
                                "initial noise (noise=[1, action_horizon, action_dim]); pass the noise the capture "
                                "was sampled with (the CLI does this from --seed).")
        tokens = select_query(capture.layout, query)
        return self.compute(model, params, obs, capture, query=tokens, steps=tuple(int(s) for s in steps),
                            layers=None if layers is None else tuple(int(x) for x in layers), noise=noise,
                            target=target)


def get_method(name: str) -> Method:
    """The registered method ``name`` (FlowlensError listing the names otherwise)."""
    if name not in METHODS:
        raise unknown_name_error("method", name, sorted(METHODS))
    return METHODS[name]


def attribute(method: str, model, params, obs, capture: Capture, *, query="action:0", step: int = 0, noise=None,
              target=None) -> np.ndarray:
    """float64 [token]: the scores of ``method`` after the last layer at denoising ``step``."""
    return get_method(method)(model, params, obs, capture, query=query, steps=(step,), noise=noise,
                              target=target).values[0, -1]


def query_spread(maps: np.ndarray, valid: np.ndarray | None = None) -> float:
    """How much a method tells queries apart: the mean total-variation distance between the score maps
    of two different queries. maps float [query, token] (NaN = not a token); each row is restricted to
    ``valid`` (bool [token]) and normalised to sum 1. 0: every query gets the same map; 1: disjoint.

    >>> query_spread(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    0.6666666666666666
    """
    m = np.nan_to_num(np.asarray(maps, dtype=np.float64))
    if valid is not None:
        m = np.where(np.asarray(valid, dtype=bool), m, 0.0)
    if m.ndim != 2 or m.shape[0] < 2:
        raise FlowlensError(f"maps must be [query, token] with at least 2 queries, got shape {m.shape}.")
    m = m / m.sum(-1, keepdims=True)
    q = m.shape[0]
    return float(np.mean([0.5 * np.abs(m[a] - m[b]).sum() for a in range(q) for b in range(a + 1, q)]))


def _masked(values: np.ndarray, capture: Capture) -> np.ndarray:
    out = np.array(values, dtype=np.float64)
    out[..., ~capture.layout.valid] = np.nan
    return out


def _rolled(kind: str, residual: float):
    def compute(model, params, obs, capture, *, query, steps, layers, noise=None, target=None):
        from flowlens.attribution.passes import contribution_capture  # JAX, loaded on use

        contrib = contribution_capture(model, params, capture, kind)
        r = rollout_all_steps(contrib, heads="mean", residual=residual, query=query, steps=list(steps),
                              method="forward")
        return Attribution(kind, _masked(r.values.mean(axis=2), capture), tuple(steps), tuple(r.layers))
    return compute


def flow_over(contrib: Capture, query: np.ndarray, steps: Sequence[int], layers: Sequence[int]) -> np.ndarray:
    """float64 [step, layer, token]: attention flow from ``query`` through layers 0..l of the graph of
    ``contrib`` (no added residual), as the share of the query's total flow; mean over the queries."""
    from flowlens.analysis.flow import flow

    out = np.zeros((len(steps), len(layers), contrib.layout.n))
    for si, s in enumerate(steps):
        graph = TokenGraph.from_capture(contrib, s, heads="mean", residual=0.0)
        for li, layer in enumerate(layers):
            pos = graph.layer_position(layer)
            sub = dataclasses.replace(graph, attention=graph.attention[: pos + 1], layers=graph.layers[: pos + 1])
            res = flow(sub, query, normalize=True)
            values = np.zeros(graph.num_nodes)
            values[graph.node_index(res.sources)] = res.values.mean(axis=0)
            out[si, li] = graph.to_tokens(values)
    return out


def _alti_flow(model, params, obs, capture, *, query, steps, layers, noise=None, target=None):
    from flowlens.attribution.passes import contribution_capture  # JAX, loaded on use

    contrib = contribution_capture(model, params, capture, "alti")
    layers = (capture.num_layers - 1,) if layers is None else layers
    return Attribution("alti_flow", _masked(flow_over(contrib, query, steps, layers), capture), steps, layers)


def _gradient(name: str):
    def compute(model, params, obs, capture, **kw):
        from flowlens.attribution import gradient_methods  # JAX, loaded on use

        return getattr(gradient_methods, name)(model, params, obs, capture, **kw)
    return compute


def _check(methods: Sequence[Method]) -> types.MappingProxyType:
    for m in methods:
        bad = [n for n in m.needs if n not in NEEDS]
        if bad:
            raise unknown_name_error("needs", bad[0], NEEDS)
    return types.MappingProxyType({m.name: m for m in methods})


METHODS = _check((
    Method("norm", "norm-based rollout", "norm-based relevance", ("residual",), _rolled("norm", 0.5)),
    Method("alti", "ALTI", "ALTI contribution", ("residual",), _rolled("alti", 0.0)),
    Method("value_zeroing", "value zeroing", "value-zeroing contribution", ("residual",),
           _rolled("value_zeroing", 0.0)),
    Method("alti_flow", "ALTI flow", "flow share (ALTI capacities)", ("residual",), _alti_flow),
    Method("relevancy", "gradient relevancy (Chefer)", "relevancy", ("gradient", "obs"), _gradient("relevancy")),
    Method("ig", "Integrated Gradients", "IG attribution", ("gradient", "obs"), _gradient("ig")),
))
"""name → Method, read-only (``types.MappingProxyType``), built once at import."""
