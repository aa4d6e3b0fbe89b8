"""Routing tables: attention mass between token selections, per frame, denoising step and layer.

For a pair of selections (query Q, key K) — any spelling of :mod:`flowlens.core.selection` — the
table holds, for every layer l:

- ``attention``: the raw mass ``mean_{q∈Q} Σ_{k∈K} A_l[q, k]`` — summed over the key selection,
  averaged over the query selection's rows — per head (``head`` = the head id) and head-fused
  (``head`` = <NA>: the mean over all heads, which is the mass of the head-mean attention);
- ``rollout``: the same sum / mean over the attention rollout ``J_l = T_l ⋯ T_0`` from layer 0
  up to and including layer l (``flowlens.analysis.rollout``, heads mean-fused, residual r), i.e.
  the share of Q's layer-l representation that traces back to the inputs K (``head`` = <NA>).

Query rows are read by ``flowlens.analysis.rows.read_rows`` (the one row reader): state / action
queries from the suffix pass of each denoising step, image / text queries from the prefix pass
(their values repeat over steps). The rollout needs every valid row (``TokenGraph.from_capture``);
it is stitched once per frame and only the suffix rows are re-read per step, and the rollout mass
runs as L column products (``rollout_columns``), not row chains. Measured at Pi0 scale (867
tokens, 18 layers, 8 heads; 4 pairs; one loaded core of a 2-core machine): 0.2 s for one step,
0.9 s for all 10 steps with per-head rows (7200 rows).

    >>> from flowlens.testing import structured_capture, toy_layout
    >>> cap = structured_capture(toy_layout(), num_layers=2, num_heads=2, num_steps=1)
    >>> t = routing_table(cap, [("actions", "words | state")])
    >>> sorted(t.measure.unique()), len(t)      # 2 layers × (head-fused attention, rollout)
    (['attention', 'rollout'], 4)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from flowlens.analysis.rollout import rollout_columns
from flowlens.analysis.rows import read_rows
from flowlens.core.capture import Capture
from flowlens.core.checks import check_flag, check_type
from flowlens.core.graph import TokenGraph
from flowlens.core.selection import index_set, resolve_tokens, selection_label
from flowlens.errors import FlowlensError

__all__ = ["ROUTING_COLUMNS", "graph_mass", "graph_rollout_mass", "routing_table"]

ROUTING_COLUMNS = ("frame", "step", "time", "layer", "query", "key", "measure", "head", "value")


def _frames(captures) -> list[tuple[object, Capture]]:
    if isinstance(captures, Capture):
        return [(0, captures)]
    if isinstance(captures, Mapping):
        items = list(captures.items())
    elif isinstance(captures, Sequence) and not isinstance(captures, str):
        items = list(enumerate(captures))
    else:
        raise FlowlensError(
            "captures must be a Capture, a list of them or a dict frame id → Capture, got "
            f"{type(captures).__name__}.")
    if not items:
        raise FlowlensError("captures is empty; give at least one Capture.")
    for fid, cap in items:
        check_type(f"captures[{fid!r}]", cap, Capture, "Load one with flowlens.load_capture(path).")
    return items


def _pairs(pairs) -> list[tuple[object, object]]:
    if isinstance(pairs, tuple) and len(pairs) == 2 and not isinstance(pairs[0], tuple):
        pairs = [pairs]
    try:
        out = [tuple(p) for p in pairs]
    except TypeError:
        out = []
    if not out or any(len(p) != 2 or isinstance(p, str) for p in out):
        raise FlowlensError(
            f"pairs must be a list of (query, key) selections, e.g. [('actions', 'words'), ('actions', "
            f"'cameras')]; got {pairs!r}.")
    return out


def _steps(capture: Capture, steps) -> list[int | None]:
    recorded = [p.step for p in capture.steps]
    if not recorded:
        return [None]
    if steps is None or isinstance(steps, str) and steps.strip().lower() == "all":
        return recorded
    try:
        wanted = index_set("steps", steps, max(recorded) + 1, "denoising steps")
    except FlowlensError as err:
        raise FlowlensError(f"steps={steps!r}: this capture recorded denoising steps {recorded}. {err}") from None
    missing = [s for s in wanted if s not in recorded]
    if missing:
        raise FlowlensError(f"steps: step {missing[0]} was not recorded; this capture recorded steps {recorded}.")
    return list(wanted)


def _heads(heads, num_heads: int) -> tuple[int, ...]:
    """Per-head rows wanted: () for "mean"; an index set ("all", "0-3", [1, 2]) otherwise."""
    if isinstance(heads, str) and heads == "mean":
        return ()
    return index_set("heads", "all" if isinstance(heads, str) and heads == "keep" else heads, num_heads)


def routing_table(captures, pairs, *, steps="all", layers=None, heads="mean", rollout: bool = True,
                  residual: float | None = 0.5) -> pd.DataFrame:
    """The routing table of one capture or many (see the module docstring for the measures).

    Args:
      captures: a Capture, a list of them (frame ids 0, 1, ...) or a dict frame id → Capture.
      pairs: (query, key) selections, or a list of them; each a selection string, ``Selection``,
        group-name list or token indices (``flowlens.core.selection.resolve_tokens``).
      steps: denoising steps ("all" recorded, or an index set such as "0,9").
      layers: model layers of the rows (index set; default all). The rollout always starts at
        layer 0, whatever is listed.
      heads: "mean" (head-fused rows only) or the heads to list one by one as well ("keep" / "all",
        "0-3", [1, 2]); needs a capture that kept every head.
      rollout: add the rollout rows (needs every valid prefix and suffix row recorded).
      residual: r of the rollout's ``rownorm((1 - r)·A + r·I)``.
    Returns:
      DataFrame with columns ``ROUTING_COLUMNS``: frame (id), step (<NA> without denoising steps),
      time (flow time, NaN without steps), layer (model layer id), query, key (selection labels),
      measure ("attention" | "rollout"), head (Int64 head id; <NA> = head-fused / rollout), value
      (float64 mass, in [0, 1]). One row per frame × step × layer × pair × measure (× head).
    Raises:
      FlowlensError: bad captures / pairs / steps / layers / heads, unknown selection names, a
        capture without the rows or heads asked for.
    """
    rollout = check_flag("rollout", rollout)
    frames = _frames(captures)
    pairs = _pairs(pairs)
    cols: dict[str, list] = {c: [] for c in ROUTING_COLUMNS}
    for fid, cap in frames:
        layout = cap.layout
        resolved = [(resolve_tokens(layout, q, argument="query"), resolve_tokens(layout, k, argument="key"))
                    for q, k in pairs]
        labels = [(selection_label(q), selection_label(k)) for q, k in pairs]
        layer_ids = index_set("layers", layers, cap.num_layers)
        per_head = _heads(heads, cap.num_heads)
        step_ids = _steps(cap, steps)
        graphs = _StepGraphs(cap, step_ids[0], residual) if rollout else None
        for step in step_ids:
            raw = _raw_mass(cap, resolved, step, layer_ids, per_head)
            roll = graphs.rollout_mass(step, resolved, layer_ids) if graphs is not None else None
            time = np.nan if step is None else cap.step(step).time
            for j, (ql, kl) in enumerate(labels):
                for li, layer in enumerate(layer_ids):
                    entries = [("attention", None, raw[j][li, -1])]
                    entries += [("attention", h, raw[j][li, i]) for i, h in enumerate(per_head)]
                    if roll is not None:
                        entries.append(("rollout", None, roll[li, j]))
                    for measure, head, value in entries:
                        for c, v in zip(ROUTING_COLUMNS, (fid, step, time, layer, ql, kl, measure, head,
                                                          float(value)), strict=True):
                            cols[c].append(v)
    table = pd.DataFrame(cols)
    table["step"] = table["step"].astype("Int64")
    table["head"] = table["head"].astype("Int64")
    return table


def _raw_mass(cap: Capture, resolved, step, layer_ids, per_head) -> list[np.ndarray]:
    """Per pair float64 [layer, len(per_head) + 1]: the listed heads' masses, then the head mean."""
    out = []
    cache: dict[bytes, object] = {}
    for q, k in resolved:
        rows = cache.get(q.tobytes())
        if rows is None:
            rows = cache[q.tobytes()] = read_rows(cap, q, step=0 if step is None else step, layers=layer_ids,
                                                  heads="keep" if per_head else "stored")
        m = rows.probs[..., rows.key_positions(k)].sum(axis=-1, dtype=np.float64).mean(axis=-1)  # [L, H]
        out.append(np.concatenate([m[:, list(per_head)], m.mean(axis=1, keepdims=True)], axis=1))
    return out


class _StepGraphs:
    """The fused graphs of a capture's steps, stitched once: the prefix rows are shared by every
    step, so each further step only re-reads its suffix rows (``read_rows``, heads mean-fused
    exactly as ``TokenGraph.from_capture`` fuses them)."""

    def __init__(self, cap: Capture, first_step, residual) -> None:
        self.cap = cap
        self.graph = TokenGraph.from_capture(cap, 0 if first_step is None else first_step, heads="mean",
                                             residual=residual)
        self.step = first_step
        self.attention = self.graph.attention  # copied before the first other step overwrites rows
        suffix = self.graph.nodes[self.graph.nodes >= cap.layout.prefix_len]
        self.suffix_tokens, self.suffix_nodes = suffix, self.graph.node_index(suffix)

    def rollout_mass(self, step, resolved, layer_ids) -> np.ndarray:
        """float64 [listed layer, pair]: rollout mass after each listed layer (chain from layer 0)."""
        g = self.graph
        if step != self.step:
            rows = read_rows(self.cap, self.suffix_tokens, step=step, layers=g.layers, heads="mean")
            if self.attention is g.attention:
                self.attention = g.attention.copy()
            self.attention[:, self.suffix_nodes, :] = rows.probs[:, 0]
            self.step = step
        r = _pair_rollout(g, self.attention, resolved)
        return r[[g.layer_position(x) for x in layer_ids]]


def graph_mass(graph: TokenGraph, query, key) -> np.ndarray:
    """Raw attention mass of a TokenGraph: Σ over ``key``, mean over ``query`` rows, per layer.

    Returns:
      float64 [layer] (fused graph) or [layer, head] (a graph built with heads="keep").
    """
    q = graph.node_index(resolve_tokens(graph.layout, query, argument="query"))
    k = graph.node_index(resolve_tokens(graph.layout, key, argument="key"))
    return graph.attention[..., q, :][..., k].sum(axis=-1, dtype=np.float64).mean(axis=-1)


def graph_rollout_mass(graph: TokenGraph, pairs) -> np.ndarray:
    """Rollout mass of a fused TokenGraph for (query, key) selection pairs, after every layer.

    Returns:
      float64 [layer, pair]: ``mean_{q∈Q} Σ_{k∈K} J_l[q, k]`` with ``J_l`` the rollout after graph
      layer l (``flowlens.analysis.rollout.rollout_columns``).
    """
    if graph.keeps_heads:
        raise FlowlensError("rollout needs fused heads; build the graph with heads='mean' (or call graph.fused()).")
    pairs = [(resolve_tokens(graph.layout, q, argument="query"), resolve_tokens(graph.layout, k, argument="key"))
             for q, k in pairs]
    return _pair_rollout(graph, graph.attention, pairs)


def _pair_rollout(graph: TokenGraph, attention: np.ndarray, pairs) -> np.ndarray:
    """float64 [layer, pair] of ``attention`` (the graph's, or one of another step on its nodes)."""
    keys = np.zeros((graph.num_nodes, len(pairs)))
    for j, (_, k) in enumerate(pairs):
        keys[graph.node_index(k), j] = 1.0
    r = rollout_columns(attention, keys, residual=graph.residual)  # [L, node, pair]
    return np.stack([r[:, graph.node_index(q), j].mean(axis=1) for j, (q, _) in enumerate(pairs)], axis=1)
