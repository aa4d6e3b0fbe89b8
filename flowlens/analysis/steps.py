"""The denoising-step dimension: any analysis at one step, at every step, or averaged over steps.

Pi0 samples an action chunk with 10 flow-matching steps; the prefix (images, prompt) is encoded
once, but the suffix queries (state, actions) attend anew at every step, and what they attend to
drifts with the flow time t (reference/landscape.md §3.8: report per step and aggregated, never
mix steps silently). This module gives three views of every per-step analysis:

- one step: call the analysis with ``step=s`` (``head_stats``, ``head_similarity``,
  ``action_attention``, ``head_image_grid``, ...);
- all steps: ``by_step(analysis, capture, steps="all", ...)`` → StepSeries of per-step results;
  rollout has its own fast path, ``rollout_all_steps`` (``flowlens.analysis.step_rollout``);
- aggregated: ``StepSeries.mean()`` — the **mean over steps of the per-step results** (for
  linear quantities — group mass, key mass, heatmaps, action blocks, rollout — this equals the
  analysis of the step-averaged attention; entropy and JS are averaged per step).

``step_evolution`` measures how much a map changes across steps (total-variation and
Jensen–Shannon distance between consecutive steps and to the step mean, which step differs most);
``step_report`` runs it for raw attention per head, rollout and the action block, with group
shares per step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from flowlens.analysis.actions import ActionAttention, split_action_rows
from flowlens.analysis.head_grids import HeadGrid, _limits
from flowlens.analysis.head_roles import LN2, js_divergence
from flowlens.analysis.heads import head_attention, head_stats
from flowlens.analysis.step_rollout import StepRollout, resolve_steps, rollout_all_steps
from flowlens.core.capture import Capture
from flowlens.core.checks import check_type, index_array, real_array
from flowlens.errors import FlowlensError

_PER_STEP_FIELDS = ("step", "time")


@dataclasses.dataclass(frozen=True, eq=False)
class StepSeries:
    """Per-step results of one analysis.

    Attributes:
      steps: denoising step of each result; times: their flow-matching times.
      results: the analysis result of each step, in ``steps`` order.
      name: the analysis' name.
    """

    steps: tuple[int, ...]
    times: tuple[float | None, ...]
    results: tuple
    name: str = ""

    def at(self, step: int):
        """The result of denoising step ``step``."""
        if step not in self.steps:
            raise FlowlensError(f"step {step} is not in this series; it holds steps {list(self.steps)}.")
        return self.results[self.steps.index(step)]

    def stack(self, field: str) -> np.ndarray:
        """float [step, ...]: one array field of every result, stacked on a new step axis."""
        first = self.results[0]
        if not hasattr(first, field):
            names = [f.name for f in dataclasses.fields(first)] if dataclasses.is_dataclass(first) else []
            from flowlens.errors import unknown_name_error

            raise unknown_name_error("field", field, names)
        return np.stack([np.asarray(getattr(r, field)) for r in self.results])

    def mean(self):
        """The mean over steps of the per-step results (see ``mean_over_steps``)."""
        return mean_over_steps(self.results)


def mean_over_steps(results: Sequence):
    """Average per-step results of one analysis into one result of the same type.

    Float array fields (and dicts of them) are averaged; ``step`` and ``time`` become None; every
    other field must agree across steps. A HeadGrid's colour limits are recomputed from the mean.

    Raises:
      FlowlensError: results of different types, or a non-float field that differs between steps
        (e.g. cluster labels or hub indices: recompute those from the averaged input instead).
    """
    results = list(results)
    if not results:
        raise FlowlensError("no results to average; give at least one step.")
    first = results[0]
    if isinstance(first, np.ndarray):
        return np.mean(np.stack(results), axis=0)
    if isinstance(first, dict) and all(isinstance(r, dict) and r.keys() == first.keys() for r in results):
        return {k: mean_over_steps([r[k] for r in results]) for k in first}  # e.g. head_grids
    if not dataclasses.is_dataclass(first) or any(type(r) is not type(first) for r in results):
        raise FlowlensError(
            f"can only average dataclass results of one type, got {[type(r).__name__ for r in results]}."
        )
    changes = {}
    for f in dataclasses.fields(first):
        vals = [getattr(r, f.name) for r in results]
        v0 = vals[0]
        if f.name in _PER_STEP_FIELDS:
            changes[f.name] = None
        elif isinstance(v0, np.ndarray) and np.issubdtype(v0.dtype, np.floating):
            changes[f.name] = np.mean(np.stack(vals), axis=0)
        elif isinstance(v0, dict) and v0 and all(isinstance(x, np.ndarray) for x in v0.values()):
            changes[f.name] = {k: np.mean(np.stack([v[k] for v in vals]), axis=0) for k in v0}
        elif not all(_same(v0, v) for v in vals[1:]):
            if isinstance(first, HeadGrid) and f.name in ("vmin", "vmax"):
                continue
            raise FlowlensError(
                f"cannot average {type(first).__name__}.{f.name} over steps: it differs between steps and is "
                "not a float array. Average the input (e.g. HeadStats or ActionAttention) and recompute it."
            )
    out = dataclasses.replace(first, **changes)
    if isinstance(out, HeadGrid):
        vmin, vmax, lmin, lmax = _limits(out.values)
        out = dataclasses.replace(out, vmin=vmin, vmax=vmax, layer_vmin=lmin, layer_vmax=lmax)
    return out


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    try:
        return bool(a == b) or a is b
    except ValueError:  # containers of arrays
        return a is b


def by_step(
    analysis: Callable, capture: Capture, steps: str | int | Sequence[int] = "all", **kwargs
) -> StepSeries:
    """Run ``analysis(capture, step=s, **kwargs)`` for every chosen step.

    Args:
      analysis: any per-step analysis taking ``(capture, step=...)``: head_stats, head_similarity,
        head_roles, rank_heads, action_attention, action_rollout, head_image_grid, head_word_grid, ...
      capture: the Capture.
      steps: "all", one step index, or a list.
    Returns:
      StepSeries of the per-step results (``.mean()`` for the aggregate).
    """
    if not callable(analysis):
        raise FlowlensError(f"analysis must be a function such as head_stats, got {type(analysis).__name__}.")
    ids = resolve_steps(capture, steps)
    results = tuple(analysis(capture, step=s, **kwargs) for s in ids)
    return StepSeries(
        steps=ids,
        times=tuple(capture.step(s).time for s in ids),
        results=results,
        name=getattr(analysis, "__name__", type(analysis).__name__),
    )


# ---- how much a map changes across steps ----------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class StepEvolution:
    """How much a per-step map (a distribution over its last axis) changes across steps.

    Attributes:
      steps: the step of each map.
      tv: float64 [step - 1, ...]: total variation ½·Σ|p_s − p_{s−1}| between consecutive steps, per item.
      js: float64 [step - 1, ...]: Jensen–Shannon distance (√JS divergence, ≤ √ln 2) between
        consecutive steps.
      tv_to_mean: float64 [step, ...]: total variation between each step and the step mean.
      mean_tv, mean_js: float64 [step - 1]: ``tv`` / ``js`` averaged over the items.
      mean_tv_to_mean: float64 [step]: ``tv_to_mean`` averaged over the items.
      most_different_step: the step farthest (mean TV) from the step mean.
      largest_change: the step s whose change from step s−1 is the largest (None with one step).
    """

    steps: tuple[int, ...]
    tv: np.ndarray
    js: np.ndarray
    tv_to_mean: np.ndarray
    mean_tv: np.ndarray
    mean_js: np.ndarray
    mean_tv_to_mean: np.ndarray
    most_different_step: int
    largest_change: int | None

    @property
    def total_tv(self) -> float:
        """Mean TV between consecutive steps (0: the map does not change with the step)."""
        return float(self.mean_tv.mean()) if self.mean_tv.size else 0.0


def step_evolution(maps: np.ndarray, steps: Sequence[int] | None = None) -> StepEvolution:
    """Consecutive-step and to-mean distances of per-step maps.

    Args:
      maps: float [step, ..., key] (>= 0; NaN counts as 0); each [..., key] slice is renormalised to a distribution over
        ``key`` (so the comparison is about *where* mass goes); all-zero slices stay zero.
      steps: the step of each map (default 0..S-1).
    Returns:
      StepEvolution.
    """
    maps = real_array("maps", maps, shape_hint="[step, ..., key]").astype(np.float64)
    if maps.ndim < 2 or np.isinf(maps).any() or (maps < 0).any():
        raise FlowlensError(
            f"maps must be [step, ..., key] (2 axes or more) of non-negative masses (NaN where a key was "
            f"removed, never inf), got shape {maps.shape} with values in [{np.nanmin(maps):.4g}, "
            f"{np.nanmax(maps):.4g}]."
        )
    steps = (tuple(range(maps.shape[0])) if steps is None
             else tuple(index_array("steps", steps, expected="a list of ints (one step id per map)").tolist()))
    if len(steps) != maps.shape[0]:
        raise FlowlensError(f"steps lists {len(steps)} steps but maps has {maps.shape[0]} on its step axis.")
    sums = np.nan_to_num(maps).sum(axis=-1, keepdims=True)
    dist = np.nan_to_num(maps) / np.where(sums > 0, sums, 1.0)
    tv = 0.5 * np.abs(np.diff(dist, axis=0)).sum(axis=-1)
    js = np.sqrt(np.clip(js_divergence(dist[1:], dist[:-1]), 0.0, LN2))
    tv_mean = 0.5 * np.abs(dist - dist.mean(axis=0, keepdims=True)).sum(axis=-1)
    lead = tuple(range(1, tv.ndim))
    mean_tv = tv.mean(axis=lead) if lead else tv
    mean_js = js.mean(axis=lead) if lead else js
    mean_to = tv_mean.mean(axis=lead) if lead else tv_mean
    return StepEvolution(
        steps=steps,
        tv=tv,
        js=js,
        tv_to_mean=tv_mean,
        mean_tv=mean_tv,
        mean_js=mean_js,
        mean_tv_to_mean=mean_to,
        most_different_step=steps[int(np.argmax(mean_to))],
        largest_change=steps[int(np.argmax(mean_tv)) + 1] if mean_tv.size else None,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class StepReport:
    """Group shares and step-to-step change of attention, rollout and the action block.

    Attributes:
      steps, times: the steps analysed.
      groups: group names of the share arrays.
      attention_shares: float64 [step, layer, group]: raw attention mass of the queries per group
        (mean over heads and queries).
      rollout_shares: float64 [step, group]: final-layer rollout mass per group (mean over queries).
      head_group_mass: float64 [step, layer, head, group]: per-head group mass.
      attention: StepEvolution of each head's query-mean attention map (items [layer, head]).
      rollout: StepEvolution of the final-layer rollout rows (items [query]).
      actions: StepEvolution of the action block rows (items [layer, head, query_h]), or None.
      step_rollout: the StepRollout behind ``rollout``.
    """

    steps: tuple[int, ...]
    times: tuple[float | None, ...]
    groups: tuple[str, ...]
    attention_shares: np.ndarray
    rollout_shares: np.ndarray
    head_group_mass: np.ndarray
    attention: StepEvolution
    rollout: StepEvolution
    actions: StepEvolution | None
    step_rollout: StepRollout

    def most_changing_heads(self, k: int = 5) -> list[tuple[int, int, float]]:
        """(layer position, head, mean consecutive TV) of the ``k`` heads whose map changes most."""
        per_head = (
            self.attention.tv.mean(axis=0)
            if self.attention.tv.size
            else np.zeros(self.attention.tv.shape[1:])
        )
        order = np.argsort(-per_head.reshape(-1), kind="stable")[:k]
        h = per_head.shape[1]
        return [(int(i // h), int(i % h), float(per_head.reshape(-1)[i])) for i in order]

    def summary(self) -> dict:
        """JSON-ready scalars: mean consecutive TV and most different step per view."""
        out = {}
        for name, ev in (("attention", self.attention), ("rollout", self.rollout), ("actions", self.actions)):
            if ev is not None:
                out[name] = {
                    "mean_tv": ev.total_tv,
                    "most_different_step": ev.most_different_step,
                    "largest_change": ev.largest_change,
                }
        return out


def step_report(
    capture: Capture,
    *,
    query=None,
    steps: str | int | Sequence[int] = "all",
    heads="mean",
    residual: float = 0.5,
    layers: Sequence[int] | None = None,
    **select,
) -> StepReport:
    """Per-step group shares and step evolution of raw attention, rollout and action attention.

    Args:
      capture: a Capture with per-head suffix passes (and the prefix pass, for rollout).
      query / **select: the queries (default: the action tokens).
      steps: "all", a step index, or a list.
      heads, residual: head fusion and residual of the rollout.
      layers: layers of the raw-attention views (rollout always uses all recorded layers).
    Returns:
      StepReport.
    """
    ids = resolve_steps(capture, steps)
    stats, blocks = [], []
    act = capture.layout.actions
    for s in ids:
        ha = head_attention(capture, step=s, query=query, layers=layers, **select)
        stats.append(head_stats(ha))
        if act is not None and np.isin(act.indices, ha.query_tokens).all():
            rows = ha.probs[:, :, np.searchsorted(ha.query_tokens, act.indices)]
            blocks.append(split_action_rows(capture.layout, rows, ha.key_tokens)[0])
    group_mass = np.stack([st.group_mass for st in stats])  # [step, layer, head, group]
    key_mass = np.stack([st.key_mass for st in stats])
    roll = rollout_all_steps(
        capture, heads=heads, residual=residual, query=query, steps=ids, all_layers=False, **select
    )
    names, rshares = roll.group_shares()
    if names != stats[0].groups:
        raise FlowlensError(f"group order mismatch between rollout {names} and head stats {stats[0].groups}.")
    valid = np.flatnonzero(capture.layout.valid)
    return StepReport(
        steps=ids,
        times=tuple(capture.step(s).time for s in ids),
        groups=stats[0].groups,
        attention_shares=group_mass.mean(axis=2),
        rollout_shares=rshares,
        head_group_mass=group_mass,
        attention=step_evolution(key_mass, ids),
        rollout=step_evolution(roll.final[..., valid], ids),
        actions=step_evolution(np.stack(blocks), ids) if blocks else None,
        step_rollout=roll,
    )


def action_attention_by_step(
    capture: Capture, *, steps: str | int | Sequence[int] = "all", heads="keep"
) -> StepSeries:
    """``action_attention`` at every chosen step (a StepSeries of ActionAttention)."""
    from flowlens.analysis.actions import action_attention

    return by_step(action_attention, capture, steps, heads=heads)


def action_rollout_by_step(
    capture: Capture,
    *,
    steps: str | int | Sequence[int] = "all",
    heads="mean",
    residual: float = 0.5,
    all_layers: bool = True,
) -> StepSeries:
    """Action-to-action rollout at every chosen step via ``rollout_all_steps`` (prefix work shared).

    Returns:
      StepSeries of ActionAttention (kind "rollout", values [layer, 1, horizon, horizon]).
    """
    layout = capture.layout
    if layout.actions is None:
        raise FlowlensError("this layout has no action tokens, so there is no action-to-action rollout.")
    roll = rollout_all_steps(
        capture,
        heads=heads,
        residual=residual,
        query=layout.actions.indices,
        steps=steps,
        all_layers=all_layers,
    )
    keys = np.arange(layout.n)
    results = []
    for i, s in enumerate(roll.steps):
        block, state, prefix = split_action_rows(layout, roll.values[i][:, None], keys)
        results.append(
            ActionAttention(
                layout=layout,
                values=block,
                state_mass=state,
                prefix_mass=prefix,
                layers=roll.layers,
                heads=(f"rollout({roll.heads}, r={roll.residual:g})",),
                kind="rollout",
                step=s,
                time=roll.times[i],
            )
        )
    return StepSeries(steps=roll.steps, times=roll.times, results=tuple(results), name="action_rollout")
