"""Attention knockouts: re-run the policy with chosen attention edges removed.

A knockout removes every edge from a set of query tokens to a set of key tokens in chosen layers
and heads, e.g. "action tokens may not read the prompt words in layers 9–17"::

    Knockout(query="actions", key="words", layers=range(9, 18))

Token sets are selections of :mod:`flowlens.core.selection`: group names of
``TokenLayout.groups()`` (a camera name, "bos", "words", "newline", "state", "actions"), a list
of them, selection strings ("words:cup", "patches:base_0_rgb[2:5,3:7]", "cameras - words"), a
``Selection``, or absolute token indices. The edit happens where
the mask is applied: those (layer, head, query, key) logits are set to the mask value
(-2.3819763e38) before the float32 softmax, so knocked edges get exactly zero probability and
the row is renormalised over the edges that remain — the same thing openpi's mask does to
padding. A knockout applies to every attention call that contains the edge (the prefix pass for
prefix → prefix edges, every denoising step for suffix queries, the full pass of ``forward``), to
every batch element, with token sets resolved on the layout of the recorded batch element.
``steps=`` narrows that in time: ``Knockout("actions", "words", steps=[3])`` edits denoising step 3
only (steps < 3 run unedited, so their actions are bit-identical), and the prefix pass is edited
only when ``"prefix"`` is listed, e.g. ``steps=("prefix", 0)``. ``Pi0Model.forward`` (one full
pass, no steps) refuses step-selected knockouts.

A query row whose allowed keys are *all* knocked out would otherwise turn into a uniform row
over every key (including padding and the suffix, i.e. garbage). flowlens instead keeps that
row's own (diagonal) edge, so the token attends to itself only and its attention output is its
own value vector. ``empty_rows="raise"`` refuses such knockouts instead. The number of rows
repaired this way is reported in ``capture.metadata["knockout_emptied_rows"]``.

Knocking out nothing (an empty list) runs the unedited model: results are bit-identical.

``resolve_plan`` turns knockouts into a KnockoutPlan (boolean query / key / layer-head masks) and
``edit_for`` cuts the ``gemma.EdgeEdit`` of one attention call from it; the sampler
(``sample_actions(..., knockouts=)``, ``sample_with_knockouts``) and ``Pi0Model.forward`` use both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from flowlens.core.layout import TokenLayout
from flowlens.core.selection import Selection, resolve_mask
from flowlens.errors import FlowlensError, unknown_name_error
from flowlens.model import gemma
from flowlens.model.capture_config import as_index_set

EMPTY_ROW_POLICIES = ("keep_self", "raise")


@dataclasses.dataclass(frozen=True)
class Knockout:
    """Remove the edges query → key in the given layers and heads.

    Attributes:
      query: the querying tokens: a selection (string, ``Selection``, group names) or token indices.
      key: the attended tokens, in the same forms.
      layers: model layers (None: all).
      heads: query heads (None: all).
      steps: None (every call: the prefix pass and every denoising step), or denoising step
        indices (negative counts from the end) and/or "prefix" (the prefix pass).
    """

    query: str | Selection | Sequence[str] | Sequence[int] | np.ndarray
    key: str | Selection | Sequence[str] | Sequence[int] | np.ndarray
    layers: Sequence[int] | range | None = None
    heads: Sequence[int] | range | None = None
    steps: Sequence[int | str] | range | None = None

    def __post_init__(self) -> None:
        if self.steps is None:
            return
        steps = [self.steps] if isinstance(self.steps, (str, int, np.integer)) else list(self.steps)
        bad = [s for s in steps if not (s == "prefix" or (isinstance(s, (int, np.integer))
                                                         and not isinstance(s, bool)))]
        if bad or not steps:
            raise FlowlensError(
                f"Knockout.steps must be None (every pass) or denoising step indices and/or 'prefix', got "
                f"{self.steps!r}; e.g. steps=('prefix', 0, 1).")
        object.__setattr__(self, "steps", tuple(s if s == "prefix" else int(s) for s in steps))

    def describe(self) -> dict:
        def tokens(v):
            if isinstance(v, (str, Selection)):
                return str(v)
            v = list(np.asarray(v).tolist()) if isinstance(v, np.ndarray) else list(v)
            return v
        return {"query": tokens(self.query), "key": tokens(self.key),
                "layers": None if self.layers is None else [int(x) for x in self.layers],
                "heads": None if self.heads is None else [int(x) for x in self.heads],
                **({} if self.steps is None else {"steps": list(self.steps)})}


@dataclasses.dataclass(frozen=True, eq=False)
class KnockoutPlan:
    """Knockouts resolved against a layout: M rank-one edge sets over the full sequence.

    Attributes:
      queries: bool [M, n] querying tokens.
      keys: bool [M, n] attended tokens.
      layer_heads: bool [M, L, N] where each edge set applies.
      steps: per knockout its ``Knockout.steps`` (None: every pass); see :meth:`passes`.
      emptied_rows: number of (layer, head, query) rows left with no key (repaired by keeping the
        diagonal edge).
      description: the knockouts as JSON-friendly dicts.
    """

    queries: np.ndarray
    keys: np.ndarray
    layer_heads: np.ndarray
    emptied_rows: int
    description: tuple[dict, ...]
    steps: tuple = ()

    @property
    def size(self) -> int:
        return int(self.queries.shape[0])

    @property
    def timed(self) -> bool:
        """Whether some knockout is restricted to chosen passes (``Knockout.steps``)."""
        return any(s is not None for s in self.steps)

    def passes(self, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """(prefix bool [M], steps bool [num_steps, M]): which passes each knockout edits.

        Raises:
          FlowlensError: a step out of range for ``num_steps``.
        """
        prefix = np.ones(self.size, bool)
        steps = np.ones((num_steps, self.size), bool)
        for m, sel in enumerate(self.steps or (None,) * self.size):
            if sel is None:
                continue
            ints = [s for s in sel if s != "prefix"]
            bad = [s for s in ints if not -num_steps <= s < num_steps]
            if bad:
                raise FlowlensError(
                    f"Knockout.steps has step {bad[0]}, but sampling runs {num_steps} denoising steps "
                    f"(0–{num_steps - 1}); pick steps in that range (or 'prefix').")
            prefix[m] = "prefix" in sel
            steps[:, m] = False
            steps[[s % num_steps for s in ints], m] = True
        return prefix, steps


def _token_mask(spec, layout: TokenLayout, argument: str) -> np.ndarray:
    sel = np.zeros(layout.n, dtype=bool)
    names = [spec] if isinstance(spec, str) else list(spec) if isinstance(spec, (list, tuple)) else None
    groups = layout.groups()
    if isinstance(spec, Selection) or names and all(isinstance(s, str) for s in names) and \
            not all(s in groups for s in names):
        return resolve_mask(layout, spec, argument=f"Knockout.{argument}")
    if isinstance(spec, str):
        spec = [spec]
    spec = list(spec.tolist()) if isinstance(spec, np.ndarray) else list(spec)
    if spec and all(isinstance(s, str) for s in spec):
        groups = layout.groups()
        for name in spec:
            if name not in groups:
                raise unknown_name_error(argument, name, list(groups))
            sel[groups[name]] = True
        return sel
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in spec):
        raise FlowlensError(f"Knockout.{argument} must be group name(s) or token indices, got {spec!r}.")
    idx = np.asarray(spec, dtype=np.int64)
    bad = idx[(idx < 0) | (idx >= layout.n)]
    if bad.size:
        raise FlowlensError(
            f"Knockout.{argument} has token {int(bad[0])}, but the layout has {layout.n} tokens "
            f"(0–{layout.n - 1})."
        )
    sel[idx] = True
    return sel


def resolve_knockouts(knockouts: Sequence[Knockout] | Knockout, layout: TokenLayout, *, num_layers: int,
                      num_heads: int, empty_rows: str = "keep_self") -> KnockoutPlan:
    """Resolve knockouts to token masks and count the rows they empty.

    Args:
      knockouts: one Knockout or a sequence.
      layout: the layout of the sequence (groups are taken from it).
      num_layers, num_heads: the model's.
      empty_rows: "keep_self" (repair rows left without keys by keeping their diagonal edge) or
        "raise".

    Raises:
      FlowlensError: unknown group, token / layer / head out of range, or (with
        ``empty_rows="raise"``) a knockout that removes every key of some query row.
    """
    if empty_rows not in EMPTY_ROW_POLICIES:
        raise unknown_name_error("empty_rows", empty_rows, list(EMPTY_ROW_POLICIES))
    if isinstance(knockouts, Knockout):
        knockouts = [knockouts]
    knockouts = list(knockouts)
    m, n = len(knockouts), layout.n
    q = np.zeros((m, n), dtype=bool)
    k = np.zeros((m, n), dtype=bool)
    lh = np.zeros((m, num_layers, num_heads), dtype=bool)
    for i, ko in enumerate(knockouts):
        if not isinstance(ko, Knockout):
            raise FlowlensError(f"knockouts[{i}] must be a Knockout, got {type(ko).__name__}.")
        q[i] = _token_mask(ko.query, layout, "query")
        k[i] = _token_mask(ko.key, layout, "key")
        layers = as_index_set(ko.layers, num_layers, "layer")
        heads = as_index_set(ko.heads, num_heads, "head")
        lh[i][np.ix_(layers, heads)] = True
    # Rows emptied, per distinct set of knockouts active at a (layer, head).
    base = layout.attention_mask()
    emptied = 0
    first = None
    patterns: dict[tuple[int, ...], np.ndarray] = {}
    for layer in range(num_layers):
        for head in range(num_heads):
            active = tuple(np.flatnonzero(lh[:, layer, head]).tolist())
            if not active:
                continue
            if active not in patterns:
                removed = np.zeros_like(base)
                for j in active:
                    removed |= q[j][:, None] & k[j][None, :]
                allowed = base & ~removed
                patterns[active] = np.flatnonzero(base.any(1) & ~allowed.any(1))
            rows = patterns[active]
            emptied += rows.size
            if rows.size and first is None:
                first = (layer, head, int(rows[0]))
    if emptied and empty_rows == "raise":
        layer, head, row = first
        raise FlowlensError(
            f"the knockouts remove every key of {emptied} (layer, head, query) rows, e.g. query token {row} "
            f"({layout.token_labels()[row]}) at layer {layer}, head {head}. Knock out fewer keys, or pass "
            "empty_rows='keep_self' to let such rows attend to themselves only."
        )
    return KnockoutPlan(queries=q, keys=k, layer_heads=lh, emptied_rows=int(emptied),
                        description=tuple(ko.describe() for ko in knockouts),
                        steps=tuple(ko.steps for ko in knockouts))


def resolve_plan(config, knockouts, layout: TokenLayout | None, empty_rows: str) -> KnockoutPlan | None:
    """The KnockoutPlan of ``knockouts`` (a Knockout, a sequence of them, None or []) for a model config.

    Args:
      config: the model's Pi0Config (its ``num_layers`` and ``num_heads`` bound the selections).
      knockouts: what to remove; None or [] plans nothing (None is returned: the unedited model).
      layout: the TokenLayout of the batch element whose token sets are resolved.
      empty_rows: "keep_self" or "raise" (see the module docstring).
    """
    if not knockouts:
        return None
    if isinstance(knockouts, Knockout):
        knockouts = [knockouts]
    return resolve_knockouts(knockouts, layout, num_layers=config.num_layers, num_heads=config.num_heads,
                             empty_rows=empty_rows)


def edit_for(plan: KnockoutPlan | None, q0: int, q1: int, s: int,
             active: np.ndarray | None = None) -> gemma.EdgeEdit | None:
    """The EdgeEdit of an attention call with queries ``[q0, q1)`` and keys ``[0, s)`` (None: no edit).

    ``active`` (bool [M]) keeps only those knockouts (None: all); when none is kept, None.
    """
    if plan is None or (active is not None and not np.any(active)):
        return None
    lh = plan.layer_heads if active is None else plan.layer_heads & np.asarray(active)[:, None, None]
    return gemma.EdgeEdit(queries=jnp.asarray(plan.queries[:, q0:q1]), keys=jnp.asarray(plan.keys[:, :s]),
                          layer_heads=jnp.asarray(lh), self_offset=s - (q1 - q0))
