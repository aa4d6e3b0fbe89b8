"""Per-head attention: where each layer × head of a query selection puts its mass.

For a query selection (default: the action tokens) and one denoising step, every layer × head
gets: attention mass per token group (each camera, ``words``, the ``bos`` and ``newline`` sinks,
``state``, ``actions``; rows sum to 1 over groups), entropy (nats, over valid keys), sink mass
(BOS + "\\n", reported, never renormalised away), the head's image heatmap per camera and its
word scores. ``rank_heads`` orders heads by the mass they put on a target (token indices, a word,
a camera region). Similarity and role clustering live in ``flowlens.analysis.head_roles``.

The statistics need only the *query rows asked for*: they read the per-head probabilities of
those rows straight from the Capture's passes (so they work when only suffix rows were recorded)
or from a TokenGraph built with ``heads="keep"``, and never build ``[layer, head, n, n]`` copies.
Rows are renormalised over valid keys in float64 (masked keys carry ~0 mass; bf16-rounded rows
do not sum exactly to 1); the raw row sums are kept in ``HeadStats.raw_mass``.

MQA caveat: Pi0's 8 query heads share one key/value head, so heads differ only through their
queries, and values (hence value norms) are shared. Prefix queries (images, text) use the
PaliGemma expert's query projection, suffix queries (state, actions) the action expert's own:
"head h" of prefix rows is *not* the same learned function as "head h" of suffix rows, so do not
compare a head across the two (reference/landscape.md §3.6).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from flowlens.analysis.rows import HeadAttention as HeadAttention
from flowlens.analysis.rows import head_attention as head_attention
from flowlens.analysis.rows import key_positions
from flowlens.analysis.rows import query_tokens as query_tokens
from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError, check_index, unknown_name_error
from flowlens.core.patches import camera_segment, patch_grid

SINK_GROUPS = ("bos", "newline")
_TINY = np.float32(1e-30)  # x·log(x + tiny) is 0 at x = 0 and exact elsewhere in float32


# ---- statistics -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class HeadStats:
    """Per layer × head statistics of a query selection at one step (means over the queries).

    Attributes:
      layout: the token layout.
      layers: model layer id of each entry of the layer axis.
      query_tokens: int64 [query] layout indices of the queries.
      key_tokens: int64 [key] layout indices of the valid keys.
      groups: group names (``layout.groups()`` order), the last axis of ``group_mass``.
      group_mass: float64 [layer, head, group]: mean over queries of the mass on each group;
        sums to 1 over groups.
      entropy: float64 [layer, head]: mean over queries of the row entropy (nats, valid keys).
      key_mass: float64 [layer, head, key]: mean over queries of the renormalised rows.
      raw_mass: float64 [layer, head]: mean raw row sum over valid keys before renormalising.
      step: denoising step (None when not from a suffix pass); time: its flow time.
    """

    layout: TokenLayout
    layers: tuple[int, ...]
    query_tokens: np.ndarray
    key_tokens: np.ndarray
    groups: tuple[str, ...]
    group_mass: np.ndarray
    entropy: np.ndarray
    key_mass: np.ndarray
    raw_mass: np.ndarray
    step: int | None = None
    time: float | None = None

    @property
    def num_layers(self) -> int:
        return self.group_mass.shape[0]

    @property
    def num_heads(self) -> int:
        return self.group_mass.shape[1]

    def group(self, name: str) -> np.ndarray:
        """float64 [layer, head]: mass on group ``name`` (0 for a group absent from the layout's
        groups only when it is a known sink; unknown names raise)."""
        if name not in self.groups:
            if name in SINK_GROUPS:
                return np.zeros(self.group_mass.shape[:2])
            raise unknown_name_error("group", name, self.groups)
        return self.group_mass[..., self.groups.index(name)]

    @property
    def sink_mass(self) -> np.ndarray:
        """float64 [layer, head]: mass on BOS + "\\n" (the text attention sinks)."""
        return sum((self.group(g) for g in SINK_GROUPS), np.zeros(self.group_mass.shape[:2]))

    def dominant_group(self) -> np.ndarray:
        """str [layer, head]: the group with the most mass."""
        return np.asarray(self.groups, dtype=object)[self.group_mass.argmax(axis=-1)]

    def token_mass(self) -> np.ndarray:
        """float64 [layer, head, token] over the layout (NaN at masked / padding tokens)."""
        out = np.full(self.key_mass.shape[:-1] + (self.layout.n,), np.nan)
        out[..., self.key_tokens] = self.key_mass
        return out

    def _pick(self, values: np.ndarray, layer: int | None, head: int | None) -> np.ndarray:
        if layer is not None:
            values = values[self.layer_pos(layer)]
            if head is not None:
                values = values[check_index("head", head, self.num_heads, "heads")]
        elif head is not None:
            values = values[:, check_index("head", head, self.num_heads, "heads")]
        return values

    def layer_pos(self, layer: int) -> int:
        """Position on the layer axis of model layer ``layer`` (negative: from the last)."""
        if layer < 0:
            return check_index("layer", layer, self.num_layers, "analysed layers")
        if layer not in self.layers:
            raise FlowlensError(f"layer {layer} was not analysed; analysed layers: {list(self.layers)}.")
        return self.layers.index(layer)

    def heatmap(
        self, camera: str | int = 0, *, layer: int | None = None, head: int | None = None
    ) -> np.ndarray:
        """Attention mass per patch of ``camera``: float64 [layer, head, rows, cols] (or the
        [rows, cols] of one layer/head). NaN for a masked camera."""
        return patch_grid(self._pick(self.token_mass(), layer, head), self.layout, camera)

    def head_mass(self, *, layer: int, head: int) -> np.ndarray:
        """float64 [token]: one head's mass over the layout (NaN at masked / padding tokens); for
        the prompt's words: ``flowlens.word_scores(stats.head_mass(layer=l, head=h), stats.layout)``."""
        return self._pick(self.token_mass(), layer, head)


def group_indicator(layout: TokenLayout, key_tokens: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """(group names, float32 [key, group] 0/1 indicator) over the given key tokens."""
    groups = layout.groups()
    names = tuple(groups)
    ind = np.zeros((key_tokens.size, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        pos = np.searchsorted(key_tokens, groups[name])
        ok = (pos < key_tokens.size) & (key_tokens[np.minimum(pos, key_tokens.size - 1)] == groups[name])
        ind[pos[ok], j] = 1.0
    return names, ind


def group_sums(rows: np.ndarray, indicator: np.ndarray) -> np.ndarray:
    """``rows @ indicator`` for a 0/1 key × group indicator, as sums over runs of keys of one group
    (a few slice sums, one pass over ``rows``; a GEMM with ~7 output columns is ~5× slower).

    Args:
      rows: float [row, key]; indicator: [key, group] with at most one 1 per key.
    Returns:
      float64 [row, group].
    """
    label = np.where(indicator.any(axis=1), indicator.argmax(axis=1), -1)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(label) != 0) + 1])
    stops = np.concatenate([starts[1:], [label.size]])
    out = np.zeros((rows.shape[0], indicator.shape[1]))
    for a, b in zip(starts, stops, strict=True):
        if label[a] >= 0:
            out[:, label[a]] += rows[:, a:b].sum(axis=1, dtype=np.float64 if b - a < 64 else None)
    return out


def head_stats(
    source, *, step: int = 0, query=None, layers: Sequence[int] | None = None, **select
) -> HeadStats:
    """Group mass, entropy, sink mass and key mass of every layer × head.

    Args:
      source: Capture, TokenGraph (heads="keep") or HeadAttention (see ``head_attention``).
      step: denoising step; query / **select: the queries (default: action tokens); layers: layers.
    Returns:
      HeadStats with group_mass [layer, head, group], entropy [layer, head], key_mass [layer, head, key].

    >>> from flowlens.testing import synthetic_capture
    >>> s = head_stats(synthetic_capture("toy", num_layers=2, num_heads=2, num_steps=1))
    >>> s.group_mass.shape, bool(np.allclose(s.group_mass.sum(-1), 1))
    ((2, 2, 6), True)
    """
    ha = head_attention(source, step=step, query=query, layers=layers, **select)
    probs = ha.probs
    num_l, num_h, num_q, num_k = probs.shape
    names, ind = group_indicator(ha.layout, ha.key_tokens)
    flat = probs.reshape(-1, num_k)
    mass = group_sums(flat, ind).reshape(num_l, num_h, num_q, len(names))
    row = mass.sum(axis=-1)
    safe = np.where(row > 0, row, 1.0)
    logs = np.add(flat, _TINY)
    np.log(logs, out=logs)
    plogp = np.einsum("ij,ij->i", flat, logs).astype(np.float64).reshape(row.shape)
    del logs
    ent = np.where(row > 0, np.log(safe) - plogp / safe, 0.0)
    weights = (1.0 / safe / num_q).astype(np.float32)[:, :, None, :]  # [layer, head, 1, query]
    key_mass = np.matmul(weights, probs)[:, :, 0, :].astype(np.float64)
    return HeadStats(
        layout=ha.layout,
        layers=ha.layers,
        query_tokens=ha.query_tokens,
        key_tokens=ha.key_tokens,
        groups=names,
        group_mass=(mass / safe[..., None]).mean(axis=2),
        entropy=np.maximum(ent, 0.0).mean(axis=2),
        key_mass=key_mass,
        raw_mass=row.mean(axis=2),
        step=ha.step,
        time=ha.time,
    )


# ---- ranking heads for a target -------------------------------------------------------------
def target_tokens(
    layout: TokenLayout, *, tokens=None, words=None, camera: str | int | None = None, patches=None, group=None
) -> np.ndarray:
    """Token indices of a target: explicit ``tokens``, prompt ``words``, a ``group``, or a
    ``camera`` (all its patches, or a region given by ``patches``).

    Args:
      patches: with ``camera``: bool [rows, cols] mask, int flat patch indices [k], or int [k, 2]
        (row, col) pairs.
    Returns:
      int64 [k] valid layout token indices.
    """
    if patches is not None and camera is None:
        raise FlowlensError("patches= needs camera= (the camera whose grid the patches index).")
    given = [x is not None for x in (tokens, words, camera, group)]
    if sum(given) != 1:
        raise FlowlensError(
            "give exactly one target: tokens=, words=, camera= (with optional patches=) or group=."
        )
    if tokens is not None:
        return query_tokens(layout, tokens)
    if words is not None:
        return layout.select(words=words)
    if group is not None:
        return layout.select(group=group)
    seg = camera_segment(layout, camera)
    if not seg.valid:
        raise FlowlensError(f"camera {seg.name!r} is masked in this layout; its patches carry no attention.")
    if patches is None:
        return seg.indices
    arr = np.asarray(patches)
    rows, cols = seg.grid
    if arr.dtype == bool:
        if arr.shape != (rows, cols):
            raise FlowlensError(
                f"patches mask must be bool [{rows}, {cols}] for {seg.name!r}, got {arr.shape}."
            )
        flat = np.flatnonzero(arr.reshape(-1))
    elif arr.ndim == 2 and arr.shape[1] == 2:
        if (
            (arr[:, 0] < 0).any()
            or (arr[:, 0] >= rows).any()
            or (arr[:, 1] < 0).any()
            or (arr[:, 1] >= cols).any()
        ):
            raise FlowlensError(
                f"patch (row, col) pairs must lie in a {rows}×{cols} grid, got {arr.tolist()}."
            )
        flat = arr[:, 0] * cols + arr[:, 1]
    else:
        flat = np.atleast_1d(arr).astype(np.int64)
        if flat.ndim != 1 or (flat < 0).any() or (flat >= rows * cols).any():
            raise FlowlensError(f"flat patch indices must lie in 0..{rows * cols - 1}, got {arr.tolist()}.")
    if flat.size == 0:
        raise FlowlensError("patches selects no patch; give at least one.")
    return seg.start + np.unique(flat)


@dataclasses.dataclass(frozen=True, eq=False)
class HeadRanking:
    """Heads ordered by the mass their queries put on a target token set.

    Attributes:
      layers: model layer id of each entry of the layer axis.
      target_tokens: int64 [k] the target's layout indices.
      mass: float64 [layer, head]: mean over queries of the mass on the target.
      order: ((layer, head, mass), ...) all heads, most mass first (ties: lower layer, head first).
      step: denoising step.
    """

    layers: tuple[int, ...]
    target_tokens: np.ndarray
    mass: np.ndarray
    order: tuple[tuple[int, int, float], ...]
    step: int | None = None

    def top(self, k: int = 5) -> tuple[tuple[int, int, float], ...]:
        """The ``k`` heads with the most mass on the target."""
        return self.order[:k]


def rank_heads(
    source,
    *,
    tokens=None,
    words=None,
    camera: str | int | None = None,
    patches=None,
    group: str | None = None,
    step: int = 0,
    query=None,
) -> HeadRanking:
    """Which heads put most mass on a target ("which heads look at the bowl / at the wrist camera")?

    Args:
      source: HeadStats (reused), or a Capture / TokenGraph(heads="keep") / HeadAttention.
      tokens / words / camera (+ patches) / group: the target, see ``target_tokens``.
      step, query: the step and queries (token indices; default action tokens) when ``source``
        is not HeadStats yet.
    Returns:
      HeadRanking with mass [layer, head].
    """
    stats = source if isinstance(source, HeadStats) else head_stats(source, step=step, query=query)
    target = target_tokens(
        stats.layout, tokens=tokens, words=words, camera=camera, patches=patches, group=group
    )
    pos = key_positions(stats.layout, stats.key_tokens, target)
    mass = stats.key_mass[..., pos].sum(axis=-1)
    flat_order = np.argsort(-mass.reshape(-1), kind="stable")
    h = stats.num_heads
    order = tuple((stats.layers[i // h], int(i % h), float(mass.reshape(-1)[i])) for i in flat_order)
    return HeadRanking(layers=stats.layers, target_tokens=target, mass=mass, order=order, step=stats.step)
