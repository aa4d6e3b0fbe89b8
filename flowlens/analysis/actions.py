"""Action-to-action attention: how the tokens of the action chunk read each other.

Pi0's action tokens form one bidirectional attention block (each action sees every action, the
state token and the prefix), so action i can draw on earlier actions (j < i), later ones (j > i)
and itself. ``action_attention`` cuts the horizon × horizon block ``A[i, j]`` (mass action i puts
on action j) out of each layer / head of a denoising step, with the mass each action puts on the
state token and on the prefix; ``action_rollout`` does the same through attention rollout — action
tokens as queries *and* as sources: the rollout rows of the action queries restricted to the
action columns (how much of action i's final representation traces back to action j's input).

``summarize_actions`` reduces a block to: mass on self / earlier / later actions, on the state
token and on the prefix (absolute masses of the full rows); bandwidth (mean |i − j| weighted by the
attention *within* the action block) and the width holding ``coverage`` (90%) of that mass
(smallest d with mass on |i − j| ≤ d ≥ 90%); and hub actions (in-degree: mass received from the
other actions).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from flowlens.analysis.rows import HeadAttention, head_attention
from flowlens.analysis.rollout import rollout as _rollout
from flowlens.core.capture import Capture
from flowlens.core.checks import LAYER_IDS, check_type, index_array, real_number
from flowlens.core.graph import TokenGraph, check_heads, fuse_heads, heads_label
from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError


@dataclasses.dataclass(frozen=True, eq=False)
class ActionAttention:
    """Horizon × horizon attention among the action tokens, per layer and head, one step.

    Attributes:
      layout: the token layout.
      values: float64 [layer, head, query_h, key_h]: mass action ``query_h`` puts on action ``key_h``.
      state_mass: float64 [layer, head, query_h]: mass on the state token (0 without one).
      prefix_mass: float64 [layer, head, query_h]: mass on all (valid) prefix tokens.
      layers: model layer id of each entry of the layer axis.
      heads: label of each entry of the head axis ("head 0", ..., or "mean", ...).
      kind: "attention" (raw attention of one layer) or "rollout" (rollout after that layer).
      step: denoising step; time: its flow-matching time.
    """

    layout: TokenLayout
    values: np.ndarray
    state_mass: np.ndarray
    prefix_mass: np.ndarray
    layers: tuple[int, ...]
    heads: tuple[str, ...]
    kind: str = "attention"
    step: int | None = None
    time: float | None = None

    @property
    def horizon(self) -> int:
        return self.values.shape[-1]


def split_action_rows(layout: TokenLayout, rows: np.ndarray, key_tokens: np.ndarray) -> tuple[np.ndarray, ...]:
    """Split rows of the action queries into (actions block, state mass, prefix mass).

    Args:
      rows: float [..., query_h, key] rows of the action tokens (in horizon order) over ``key_tokens``.
      key_tokens: int [key] layout index of each key (sorted).
    Returns:
      (float64 [..., query_h, key_h], float64 [..., query_h], float64 [..., query_h]).
    """
    act = layout.actions
    if act is None:
        raise FlowlensError("this layout has no action tokens.")
    pos = np.searchsorted(key_tokens, act.indices)
    if pos.max(initial=-1) >= key_tokens.size or not np.array_equal(key_tokens[pos], act.indices):
        raise FlowlensError("every action token must be a key of the attention rows given.")
    block = np.asarray(rows[..., pos], dtype=np.float64)
    state = layout.state
    if state is not None:
        spos = np.searchsorted(key_tokens, state.start)
        state_mass = np.asarray(rows[..., spos], dtype=np.float64)
    else:
        state_mass = np.zeros(block.shape[:-1])
    rows = np.asarray(rows)
    prefix_keys = (key_tokens < layout.prefix_len).astype(rows.dtype)  # a GEMV, no column gather
    prefix_mass = (rows @ prefix_keys).astype(np.float64)
    return block, state_mass, prefix_mass


def action_attention(
    source, *, step: int = 0, heads: str | int | Sequence[int] = "keep", layers: Sequence[int] | None = None
) -> ActionAttention:
    """Raw action-to-action attention of one denoising step.

    Args:
      source: a Capture (suffix rows suffice), a TokenGraph (any head fusion) or a HeadAttention
        whose queries are the action tokens.
      step: denoising step (Capture only).
      heads: "keep" (every head) or a fusion: "mean", "max", "min", a head index, a list of heads.
      layers: model layers (default: all recorded).
    Returns:
      ActionAttention with values [layer, head, horizon, horizon] (head axis of size 1 when fused).
    """
    check_type("source", source, (Capture, TokenGraph, HeadAttention))
    heads = check_heads(heads, keep=True)
    layout = source.layout
    act = layout.actions
    if act is None:
        raise FlowlensError("this layout has no action tokens, so there is no action-to-action attention.")
    if isinstance(source, TokenGraph) and not source.keeps_heads:
        if not (isinstance(heads, str) and heads in ("keep", source.heads)):
            raise FlowlensError(
                f"this graph's heads are fused ({source.heads}); use heads='keep', or build the graph "
                "with heads='keep' to fuse them differently."
            )
        nodes = source.node_index(act.indices)
        lpos = (
            list(range(source.num_layers))
            if layers is None
            else [source.layer_position(x)
                  for x in index_array("layers", layers, expected=LAYER_IDS).tolist()]
        )
        rows = source.attention[lpos][:, None][:, :, nodes, :]
        key_tokens, label = source.nodes, (source.heads,)
        lay, stp, tm = tuple(source.layers[i] for i in lpos), source.step, source.time
    else:
        if isinstance(source, HeadAttention):
            if layers is not None:
                raise FlowlensError("source is already a HeadAttention; choose layers when building it.")
            ha = source
        else:
            ha = head_attention(source, step=step, query=act.indices, layers=layers)
        if not np.array_equal(ha.query_tokens, act.indices):
            raise FlowlensError(
                "the HeadAttention given must have the action tokens (in order) as its queries."
            )
        rows, key_tokens, lay, stp, tm = ha.probs, ha.key_tokens, ha.layers, ha.step, ha.time
        label = tuple(f"head {h}" for h in range(ha.num_heads))
        if not (isinstance(heads, str) and heads == "keep"):
            rows = fuse_heads(rows, heads, axis=1)
            rows = rows[:, None] if rows.ndim == 3 else rows
            label = (heads_label(heads),)
    block, state_mass, prefix_mass = split_action_rows(layout, rows, key_tokens)
    return ActionAttention(
        layout=layout,
        values=block,
        state_mass=state_mass,
        prefix_mass=prefix_mass,
        layers=lay,
        heads=label,
        kind="attention",
        step=stp,
        time=tm,
    )


def action_rollout(
    source,
    *,
    step: int = 0,
    heads: str | int | Sequence[int] = "mean",
    residual: float = 0.5,
    all_layers: bool = True,
) -> ActionAttention:
    """Action-to-action rollout: action queries' rollout rows restricted to the action columns.

    Args:
      source: a Capture (prefix pass and the step's suffix pass) or a head-fused TokenGraph.
      step, heads, residual: graph construction from a Capture (ignored for a TokenGraph).
      all_layers: rollout after every layer (default) or only after the last.
    Returns:
      ActionAttention (kind "rollout") with values [layer, 1, horizon, horizon]; state_mass and
      prefix_mass are the rollout mass on the state token and on the prefix inputs.
    """
    heads = check_heads(heads)
    if isinstance(source, Capture):
        graph = TokenGraph.from_capture(source, step, heads=heads, residual=residual)
    elif isinstance(source, TokenGraph):
        graph = source if not source.keeps_heads else source.fused(heads)
    else:
        raise FlowlensError(f"source must be a Capture or a TokenGraph, got {type(source).__name__}.")
    act = graph.layout.actions
    if act is None:
        raise FlowlensError("this layout has no action tokens, so there is no action-to-action rollout.")
    roll = _rollout(graph, act.indices, all_layers=all_layers)
    block, state_mass, prefix_mass = split_action_rows(graph.layout, roll.values[:, None], graph.nodes)
    return ActionAttention(
        layout=graph.layout,
        values=block,
        state_mass=state_mass,
        prefix_mass=prefix_mass,
        layers=roll.layers,
        heads=(f"rollout({graph.heads}, r={graph.residual:g})",),
        kind="rollout",
        step=graph.step,
        time=graph.time,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class ActionSummary:
    """Summaries of an ActionAttention, each float64 [layer, head] unless said (means over query actions).

    Attributes:
      self_mass, earlier_mass, later_mass: mass on j == i, j < i, j > i (absolute row mass).
      state_mass, prefix_mass: mass on the state token and on the prefix.
      bandwidth: mean |i − j| weighted by the attention within the action block.
      width: smallest d such that |i − j| ≤ d holds ``coverage`` of the within-block mass.
      coverage: the share ``width`` refers to (0.9).
      in_degree: float64 [layer, head, key_h]: mass each action receives from the other actions.
      hub: int [layer, head]: the action with the largest in-degree.
      layers, heads, kind, step: as in the ActionAttention.
    """

    self_mass: np.ndarray
    earlier_mass: np.ndarray
    later_mass: np.ndarray
    state_mass: np.ndarray
    prefix_mass: np.ndarray
    bandwidth: np.ndarray
    width: np.ndarray
    coverage: float
    in_degree: np.ndarray
    hub: np.ndarray
    layers: tuple[int, ...]
    heads: tuple[str, ...]
    kind: str
    step: int | None = None

    def hubs(self, k: int = 3) -> np.ndarray:
        """int [layer, head, k]: the ``k`` most attended-to actions, highest in-degree first."""
        return np.argsort(-self.in_degree, axis=-1, kind="stable")[..., :k]


def summarize_actions(attn: ActionAttention, *, coverage: float = 0.9) -> ActionSummary:
    """Self / earlier / later / state / prefix mass, bandwidth, coverage width and hubs.

    Args:
      attn: an ActionAttention (raw attention or rollout).
      coverage: share of the within-block mass the ``width`` must hold, in (0, 1].
    Returns:
      ActionSummary (arrays [layer, head], in_degree [layer, head, horizon]).

    >>> import numpy as np
    >>> from flowlens.testing import toy_layout
    >>> eye = np.eye(3)[None, None]
    >>> z = np.zeros((1, 1, 3))
    >>> s = summarize_actions(ActionAttention(toy_layout(), eye, z, z, (0,), ("head 0",)))
    >>> float(s.self_mass[0, 0]), float(s.bandwidth[0, 0]), float(s.width[0, 0])
    (1.0, 0.0, 0.0)
    """
    check_type("attn", attn, ActionAttention, "Compute one with action_attention or action_rollout.")
    if not 0.0 < real_number("coverage", coverage) <= 1.0:
        raise FlowlensError(f"coverage must be in (0, 1], e.g. 0.9, got {coverage}.")
    a = attn.values
    h = a.shape[-1]
    idx = np.arange(h)
    dist = np.abs(idx[:, None] - idx[None, :])
    self_mass = np.diagonal(a, axis1=-2, axis2=-1).mean(axis=-1)
    earlier = (a * (idx[None, :] < idx[:, None])).sum(axis=-1).mean(axis=-1)
    later = (a * (idx[None, :] > idx[:, None])).sum(axis=-1).mean(axis=-1)
    row = a.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = a / row[..., None]
    band_rows = (w * dist).sum(axis=-1)
    by_dist = np.empty(w.shape[:-1] + (h,))  # [..., query_h, d]: mass at |i - j| == d
    by_dist[..., 0] = np.diagonal(w, axis1=-2, axis2=-1)
    for d in range(1, h):
        by_dist[..., d] = 0.0
        by_dist[..., : h - d, d] += np.diagonal(w, offset=d, axis1=-2, axis2=-1)  # j = i + d
        by_dist[..., d:, d] += np.diagonal(w, offset=-d, axis1=-2, axis2=-1)  # j = i - d
    within = by_dist @ np.triu(np.ones((h, h)))  # cumulative over d (a GEMM beats cumsum on short rows)
    width_rows = np.argmax(within >= coverage - 1e-9, axis=-1).astype(np.float64)
    empty = ~(row > 0)
    band_rows[empty] = np.nan
    width_rows[empty] = np.nan
    with np.errstate(invalid="ignore"):
        bandwidth = _nanmean(band_rows)
        width = _nanmean(width_rows)
    in_degree = a.sum(axis=-2) - np.diagonal(a, axis1=-2, axis2=-1)
    return ActionSummary(
        self_mass=self_mass,
        earlier_mass=earlier,
        later_mass=later,
        state_mass=attn.state_mass.mean(axis=-1),
        prefix_mass=attn.prefix_mass.mean(axis=-1),
        bandwidth=bandwidth,
        width=width,
        coverage=float(coverage),
        in_degree=in_degree,
        hub=in_degree.argmax(axis=-1),
        layers=attn.layers,
        heads=attn.heads,
        kind=attn.kind,
        step=attn.step,
    )


def _nanmean(x: np.ndarray) -> np.ndarray:
    count = (~np.isnan(x)).sum(axis=-1)
    total = np.nansum(x, axis=-1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)
