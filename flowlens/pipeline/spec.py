"""AnalysisSpec: what to compute for a frame — method, query, heads, denoising step, layers.

One frozen record carries the choices the ``flowlens`` command exposes as flags, so a notebook
and the CLI ask for exactly the same thing:

- ``method``: "raw" (the query's attention row at each layer), "rollout" (Abnar & Zuidema 2020:
  relevance of each input token after each layer), "flow" (attention flow, max-flow), or a method
  of the attribution registry (``flowlens.attribution.METHODS``: "norm", "alti", "value_zeroing",
  "alti_flow", ...; they need a model backend).
- ``query``: which tokens ask — "action:0" (the first action token, default), "action:<i>",
  "actions" (all action tokens, averaged), "last" (the last action token), "state" (Pi0's
  state token).
- ``heads``: None = mean over heads, or head indices (mean of those heads).
- ``step``: denoising step index (0 is t = 1.0) or "all" (every step; figures say so).
- ``layers``: model layers the per-layer figures show (None: every layer).

    >>> spec = AnalysisSpec.create(method="raw", query="actions", layers=[0, 8, 17])
    >>> spec.query, spec.layers
    ('actions', (0, 8, 17))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from flowlens.attribution.methods import METHODS as ATTRIBUTION_METHODS
from flowlens.core.layout import TokenLayout
from flowlens.core.query import parse_query as parse_query
from flowlens.core.query import select_query
from flowlens.errors import FlowlensError, unknown_name_error
from flowlens.report.html import METHOD_LABELS

ATTENTION_METHODS = ("raw", "rollout", "flow")
METHODS = ATTENTION_METHODS + tuple(ATTRIBUTION_METHODS)  # the registry's (flowlens.attribution.methods)
VALUE_LABELS = {"raw": "attention mass", "rollout": "rollout relevance", "flow": "flow share",
                **{m.name: m.value_label for m in ATTRIBUTION_METHODS.values()}}


def parse_step(value: int | str | None) -> int | str:
    """A denoising step index (int, negative counts from the last) or "all"."""
    if value is None:
        return 0
    if isinstance(value, str):
        v = value.strip().lower()
        if v == "all":
            return "all"
        try:
            return int(v)
        except ValueError:
            raise FlowlensError(
                f"step={value!r} is not a denoising step; give an index (0 is the first step, t = 1.0) or 'all'."
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise FlowlensError(f"step must be an int or 'all', got {value!r}.")
    return int(value)


@dataclasses.dataclass(frozen=True)
class AnalysisSpec:
    """What to compute for each frame.

    Attributes:
      method: "raw", "rollout" or "flow".
      query: normalised query ("action:0", "action:<i>", "actions", "last", "state").
      heads: None for the mean over heads, else a tuple of head indices (mean of those).
      step: denoising step index, or "all".
      layers: model layers for per-layer figures (None: all layers).
      residual: r of rownorm((1 - r)·A + r·I) for rollout and flow (0.5 as Abnar & Zuidema).
    """

    method: str = "rollout"
    query: str = "action:0"
    heads: tuple[int, ...] | None = None
    step: int | str = 0
    layers: tuple[int, ...] | None = None
    residual: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise unknown_name_error("method", self.method, METHODS)
        object.__setattr__(self, "query", parse_query(self.query))
        object.__setattr__(self, "step", parse_step(self.step))
        if self.heads is not None:
            heads = tuple(int(h) for h in np.atleast_1d(self.heads))
            if not heads:
                raise FlowlensError("heads is empty; leave it out for the mean over heads, or give head indices.")
            object.__setattr__(self, "heads", heads)
        if self.layers is not None:
            layers = tuple(int(x) for x in np.atleast_1d(self.layers))
            if not layers:
                raise FlowlensError("layers is empty; leave it out for every layer, or give layer indices.")
            object.__setattr__(self, "layers", layers)
        if not 0.0 <= float(self.residual) <= 1.0:
            raise FlowlensError(f"residual must be in [0, 1] (0.5 in Abnar & Zuidema), got {self.residual}.")

    @classmethod
    def create(
        cls,
        *,
        method: str = "rollout",
        query: str | None = None,
        heads: Sequence[int] | int | None = None,
        step: int | str | None = 0,
        layers: Sequence[int] | None = None,
        residual: float = 0.5,
    ) -> AnalysisSpec:
        """Build a spec from loose inputs (CLI strings, lists); None means the default."""
        return cls(
            method=method or "rollout",
            query=query or "action:0",
            heads=None if heads is None or (not np.isscalar(heads) and len(heads) == 0) else heads,
            step=parse_step(step),
            layers=None if not layers else tuple(layers),
            residual=residual,
        )

    # ---- checks against a model -------------------------------------------------------------
    def check_model(self, *, num_layers: int, num_heads: int, num_steps: int | None = None) -> None:
        """Raise FlowlensError when layers / heads / step do not exist in a model of that size.

        The pipeline runs this once per run, where the backend is known (``run_single``,
        ``run_episode``, ``compare_episodes``, ``build_episode_report``, ``analyze_frame`` /
        ``analyze_capture`` when called on their own); the per-frame work does not repeat it.
        """
        for layer in self.layers or ():
            if not 0 <= layer < num_layers:
                raise FlowlensError(
                    f"layer {layer} out of range: the model has {num_layers} layers (valid: "
                    f"0–{num_layers - 1}); "
                    f"pass --layers with values in that range, e.g. --layers 0 {num_layers // 2} "
                    f"{num_layers - 1}."
                )
        for head in self.heads or ():
            if not 0 <= head < num_heads:
                raise FlowlensError(
                    f"head {head} out of range: the model has {num_heads} heads per layer "
                    f"(valid: 0–{num_heads - 1}); leave --heads out for the mean over heads."
                )
        if num_steps is not None:
            self._check_step(num_steps)

    def _check_step(self, num_steps: int) -> None:
        if isinstance(self.step, int) and not -num_steps <= self.step < num_steps:
            raise FlowlensError(
                f"step {self.step} out of range: the model samples with {num_steps} denoising steps "
                f"(valid: 0–{num_steps - 1}, or 'all')."
            )

    def step_indices(self, num_steps: int) -> tuple[int, ...]:
        """The denoising steps this spec reads (all steps for "all")."""
        if self.step == "all":
            return tuple(range(num_steps))
        self._check_step(num_steps)
        return (int(self.step) % num_steps,)

    def figure_layers(self, num_layers: int) -> tuple[int, ...]:
        return tuple(range(num_layers)) if self.layers is None else self.layers

    # ---- query resolution -------------------------------------------------------------------
    def query_tokens(self, layout: TokenLayout) -> np.ndarray:
        """Layout token indices of the query (int64 [query]); see ``flowlens.core.query``."""
        return select_query(layout, self.query)

    @property
    def query_label(self) -> str:
        if self.query == "actions":
            return "all action tokens (mean)"
        if self.query == "last":
            return "last action token"
        if self.query == "state":
            return "state token"
        return f"action token a{self.query.split(':')[1]}"

    @property
    def method_label(self) -> str:
        if self.method in METHOD_LABELS:
            return METHOD_LABELS[self.method]
        return ATTRIBUTION_METHODS[self.method].label

    @property
    def needs_residual(self) -> bool:
        """True for a registry method that reads the residual stream (norm, ALTI, value zeroing)."""
        return self.method in ATTRIBUTION_METHODS and "residual" in ATTRIBUTION_METHODS[self.method].needs

    @property
    def value_label(self) -> str:
        return VALUE_LABELS[self.method]

    @property
    def heads_label(self) -> str:
        if self.heads is None:
            return "heads: mean"
        if len(self.heads) == 1:
            return f"head {self.heads[0]}"
        return f"heads: mean of {list(self.heads)}"

    @property
    def heads_argument(self) -> str | int | list[int]:
        """The ``heads`` argument of TokenGraph.from_capture / fuse_heads."""
        if self.heads is None:
            return "mean"
        return self.heads[0] if len(self.heads) == 1 else list(self.heads)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "query": self.query,
            "heads": list(self.heads) if self.heads else None,
            "step": self.step,
            "layers": list(self.layers) if self.layers else None,
            "residual": self.residual,
        }
