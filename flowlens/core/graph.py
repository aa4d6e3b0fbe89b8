"""TokenGraph: the layered attention graph of one denoising step, over the valid tokens.

openpi computes attention in two calls: the prefix pass (images + prompt, once per inference)
and one suffix pass per denoising step (state + actions against ``[prefix | suffix]`` keys).
Because prefix queries never see the suffix, the full per-layer matrix of step ``s`` is exactly

    A_l = [[ A_prefix,l        0           ]      (prefix rows: the prefix pass)
           [ A_suffix,l,s[:, :P]  A_suffix,l,s[:, P:] ]]   (suffix rows: step s)

A TokenGraph holds that matrix for every recorded layer, with heads fused (mean / max / min /
one head / a subset) or kept, and with fully masked query rows and masked key columns removed:
openpi's softmax turns an all-masked row into a uniform 1/S row, which is garbage that would
spread mass everywhere in rollout (reference/landscape.md §3.1). Nodes are therefore the *valid*
tokens; ``nodes[i]`` is the layout index of node ``i``.

The residual policy is stored, not applied: analyses use ``transition(layer)``, the row-stochastic
``rownorm((1 - r)·A + r·I)`` of Abnar & Zuidema (2020), r = 0.5 by default (r = 0: no residual,
rows still renormalised, which matters for max/min fusion).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from flowlens.core.capture import Capture, PassKind, check_probabilities, resolve_layers
from flowlens.core.checks import LAYER_IDS, check_residual, check_type, index_array, real_array
from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError, check_index, did_you_mean, unknown_name_error

HEAD_FUSIONS = ("mean", "max", "min", "keep")


def fuse_heads(probs: np.ndarray, heads: str | int | Sequence[int] = "mean", *, axis: int = 1,
               dtype=np.float32) -> np.ndarray:
    """Fuse the head axis of ``probs`` — the one head fusion of TokenGraph, rollout and attention flow.

    Args:
      probs: [..., head, query, key] with the head axis at ``axis``.
      heads: "mean", "max", "min" over all heads, an int (one head, axis dropped), a sequence of
        ints (mean over those heads), or "keep" (returned unchanged).
      dtype: the accumulation (and output) dtype of the fusion. TokenGraph and attention flow
        both fuse float32 attention in float32, so their fused layers are identical.
    Returns:
      ``dtype`` array without the head axis (or ``probs`` unchanged for "keep").

    >>> p = np.array([[[[0.25, 0.75]], [[0.75, 0.25]]]], dtype=np.float32)  # [layer, head, q, k]
    >>> fuse_heads(p, "mean")
    array([[[0.5, 0.5]]], dtype=float32)
    >>> fuse_heads(p, 1, dtype=np.float64)
    array([[[0.75, 0.25]]])
    """
    num_heads = probs.shape[axis]
    if isinstance(heads, str):
        if heads not in HEAD_FUSIONS:
            raise unknown_name_error("heads", heads, HEAD_FUSIONS)
        if heads == "keep":
            return probs
        if heads == "mean":
            return np.mean(probs, axis=axis, dtype=dtype)
        return getattr(np, heads)(probs, axis=axis).astype(dtype, copy=False)
    if isinstance(heads, (int, np.integer)):
        h = check_index("head", int(heads), num_heads, "heads")
        return np.take(probs, h, axis=axis).astype(dtype, copy=False)
    chosen = [check_index("head", int(h), num_heads, "heads") for h in heads]
    if not chosen:
        raise FlowlensError("heads is an empty list; give at least one head index or 'mean'.")
    return np.take(probs, chosen, axis=axis).mean(axis=axis, dtype=dtype)


def heads_label(heads) -> str:
    if isinstance(heads, str):
        return heads
    if isinstance(heads, (int, np.integer)):
        return f"head {int(heads)}"
    return f"heads {list(map(int, heads))}"


def check_heads(heads, *, keep: bool = False):
    """Check the form of a ``heads=`` argument (head ranges are checked where the heads are known).

    Args:
      heads: "mean" | "max" | "min" | a head index | a list of head indices (| "keep" when ``keep``).
    Returns:
      ``heads`` unchanged (an int or a list of ints for indices).
    Raises:
      FlowlensError: naming ``heads``, what it accepts and what it got.
    """
    names = HEAD_FUSIONS if keep else HEAD_FUSIONS[:-1]
    if isinstance(heads, str) and heads in names:
        return heads
    if isinstance(heads, (int, np.integer)) and not isinstance(heads, bool):
        return int(heads)
    if not isinstance(heads, (str, bool)) and isinstance(heads, (Sequence, np.ndarray)):
        items = list(np.asarray(heads).reshape(-1)) if isinstance(heads, np.ndarray) else list(heads)
        if items and all(isinstance(h, (int, np.integer)) and not isinstance(h, bool) for h in items):
            return [int(h) for h in items]
    expected = ", ".join(repr(n) for n in names)
    hint = did_you_mean(heads, names) if isinstance(heads, str) else ""
    raise FlowlensError(
        f"heads={heads!r} not understood: expected {expected}, a head index or a list of heads.{hint}"
    )


@dataclasses.dataclass(frozen=True, eq=False)
class TokenGraph:
    """Per-layer attention over the valid tokens of one denoising step.

    Attributes:
      layout: the token layout.
      nodes: int64 [node]: layout token index of each node (valid tokens, in order).
      attention: float32 [layer, node, node] (heads fused) or [layer, head, node, node] ("keep").
      layers: model layer id of each entry of the layer axis.
      num_model_layers: depth of the model (rollout over fewer layers is partial).
      heads: how heads were fused ("mean", "max", "min", "head 3", "heads [0, 2]", "keep").
      residual: r of ``rownorm((1 - r)·A + r·I)``; 0.0 means no residual.
      step: denoising step the suffix rows come from (None for a full pass).
      time: flow-matching time of that step.

    Built directly, the fields are checked: attention must be finite probabilities in [0, 1]
    (FlowlensError otherwise, so rollout never sees NaN or negative weights).
    """

    layout: TokenLayout
    nodes: np.ndarray
    attention: np.ndarray
    layers: tuple[int, ...]
    num_model_layers: int
    heads: str = "mean"
    residual: float = 0.5
    step: int | None = None
    time: float | None = None

    def __post_init__(self) -> None:
        check_type("layout", self.layout, TokenLayout)
        object.__setattr__(self, "residual", check_residual(self.residual) or 0.0)
        object.__setattr__(self, "layers", tuple(index_array("layers", self.layers, expected=LAYER_IDS).tolist()))
        m = len(index_array("nodes", self.nodes))
        att = real_array("attention", self.attention, kinds="f", shape_hint="[layer, (head,) node, node]")
        if att.shape[-2:] != (m, m) or att.ndim not in (3, 4) or len(self.layers) != att.shape[0]:
            raise FlowlensError(
                f"attention must be [layer, node, node] or [layer, head, node, node] with node={m} and "
                f"layer={len(self.layers)} (one per entry of layers), got shape {att.shape}."
            )
        check_probabilities(att, "attention", valid_rows=np.zeros(m, dtype=bool))  # row sums vary with fusion

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_capture(
        cls,
        capture: Capture,
        step: int = 0,
        *,
        heads: str | int | Sequence[int] = "mean",
        residual: float | None = 0.5,
        layers: Sequence[int] | None = None,
    ) -> TokenGraph:
        """Stitch the graph of denoising ``step`` from the prefix pass and that step's suffix pass.

        A capture holding a full (training-style) pass and no suffix passes uses the full pass.

        Args:
          capture: a Capture with all valid prefix rows and all valid suffix rows recorded.
          step: denoising step (0 = t 1.0; negative counts from the last).
          heads: "mean" | "max" | "min" | head index | list of head indices | "keep".
          residual: r in [0, 1] (None = 0, no residual).
          layers: model layers to include (default: every layer recorded in all passes used).
        """
        check_type("capture", capture, Capture, "Load one with flowlens.load_capture(path).")
        heads = check_heads(heads, keep=True)
        residual = check_residual(residual)
        layout = capture.layout
        n, p_len = layout.n, layout.prefix_len
        valid = layout.valid
        use_full = capture.full is not None and not capture.steps
        parts = [capture.full] if use_full else [capture.prefix, capture.step(step)]
        if not use_full and parts[0] is None:
            raise FlowlensError(
                "this capture has no prefix pass, so the full attention graph cannot be stitched. "
                "Record the prefix pass (or store with a policy that keeps prefix rows) to run "
                "rollout / flow; raw attention of the recorded rows is still available from capture.steps."
            )
        layers = list(resolve_layers(parts, layers, capture.num_layers, "every pass this graph needs"))
        keep_heads = isinstance(heads, str) and heads == "keep"
        for p in parts:
            if p.head_reduction is not None and not (isinstance(heads, str) and heads == p.head_reduction):
                raise FlowlensError(
                    f"heads={heads!r} was asked for, but the {p.kind.value} pass stored only the "
                    f"{p.head_reduction!r} of all heads; use heads={p.head_reduction!r} or record all heads."
                )
            rows_needed = np.arange(*((0, p_len) if p.kind == PassKind.PREFIX else
                                      (p_len, n) if p.kind == PassKind.SUFFIX else (0, n)))
            rows_needed = rows_needed[valid[rows_needed]]
            if not np.isin(rows_needed, p.query_rows).all():
                raise FlowlensError(
                    f"the {p.kind.value} pass recorded {p.query_rows.size} query rows but the graph needs "
                    f"every valid row ({rows_needed.size}); record all rows of that pass for rollout/flow."
                )
        nodes = np.flatnonzero(valid)
        m = nodes.size
        head_count = capture.num_heads if keep_heads else None
        shape = (len(layers), head_count, m, m) if keep_heads else (len(layers), m, m)
        out = np.zeros(shape, dtype=np.float32)
        pos_of = np.full(n, -1)
        pos_of[nodes] = np.arange(m)
        for p in parts:
            row_sel = np.flatnonzero(valid[p.query_rows])
            rows_nodes = pos_of[p.query_rows[row_sel]]
            key_valid = np.flatnonzero(valid[: p.key_count])
            key_nodes = pos_of[key_valid]
            for i, layer in enumerate(layers):
                src = p.probs[p.layer_index(layer)]  # [head, query, key]
                if keep_heads:
                    fused = src
                elif p.head_reduction is not None:
                    fused = src[0]
                else:
                    fused = fuse_heads(src, heads, axis=0)
                block = fused[..., row_sel, :][..., key_valid]
                if keep_heads:
                    out[i][:, rows_nodes[:, None], key_nodes[None, :]] = block
                else:
                    out[i][rows_nodes[:, None], key_nodes[None, :]] = block
        suffix = None if use_full else parts[1]
        return cls(layout=layout, nodes=nodes, attention=out, layers=tuple(layers),
                   num_model_layers=capture.num_layers, heads=heads_label(heads),
                   residual=float(residual or 0.0), step=None if use_full else suffix.step,
                   time=None if use_full else suffix.time)

    @classmethod
    def from_attention(cls, layout: TokenLayout, attention: np.ndarray, *, heads="mean",
                       residual: float | None = 0.5) -> TokenGraph:
        """A graph from joint-pass attention ``[layer, head, n, n]`` over ``layout`` (all layers)."""
        check_type("layout", layout, TokenLayout)
        attention = real_array("attention", attention, shape_hint="[layer, head, n, n]").astype(np.float32, copy=False)
        if attention.ndim != 4 or attention.shape[2:] != (layout.n, layout.n):
            raise FlowlensError(
                f"attention must be [layer, head, {layout.n}, {layout.n}] for this layout, got {attention.shape}."
            )
        from flowlens.core.capture import AttentionPass  # local: keeps the import graph flat

        full = AttentionPass(PassKind.FULL, attention, tuple(range(attention.shape[0])), np.arange(layout.n))
        cap = Capture(layout=layout, num_layers=attention.shape[0], num_heads=attention.shape[1],
                      passes=(full,))
        return cls.from_capture(cap, heads=heads, residual=residual)

    # ---- basic properties ---------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        return int(self.nodes.size)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def keeps_heads(self) -> bool:
        return self.attention.ndim == 4

    @property
    def is_complete(self) -> bool:
        """True when every model layer is present (rollout over fewer layers is partial)."""
        return self.layers == tuple(range(self.num_model_layers))

    def layer_position(self, layer: int) -> int:
        """Position on the layer axis of model layer ``layer`` (negative: from the last recorded)."""
        if layer < 0:
            return check_index("layer", layer, self.num_layers, "recorded layers")
        if layer not in self.layers:
            check_index("layer", layer, self.num_model_layers, "layers")
            raise FlowlensError(f"layer {layer} is not in this graph; it holds layers {list(self.layers)}.")
        return self.layers.index(layer)

    def fused(self, heads: str | int | Sequence[int] = "mean") -> TokenGraph:
        """This graph with heads fused (only for graphs built with heads="keep")."""
        if not self.keeps_heads:
            raise FlowlensError(f"this graph's heads are already fused ({self.heads}); build it with heads='keep'.")
        return dataclasses.replace(self, attention=fuse_heads(self.attention, heads, axis=1),
                                   heads=heads_label(heads))

    # ---- node selection -----------------------------------------------------------------
    def node_index(self, tokens: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """Node positions of layout token indices; invalid (dropped) tokens raise."""
        tokens = np.atleast_1d(np.asarray(tokens, dtype=np.int64))
        pos = np.searchsorted(self.nodes, tokens)
        pos = np.clip(pos, 0, self.num_nodes - 1)
        bad = tokens[self.nodes[pos] != tokens]
        if bad.size:
            seg = self.layout.segment_of_token(int(bad[0]))
            raise FlowlensError(
                f"token {int(bad[0])} ({seg.name}) is not a node of this graph: it is masked or padding, "
                "so its attention row is garbage and was removed."
            )
        return pos

    def select(self, **criteria) -> np.ndarray:
        """Node positions of ``layout.select(**criteria)`` (kind, camera, words, horizon, group)."""
        return self.node_index(self.layout.select(**criteria))

    def to_tokens(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Scatter ``[..., node]`` values onto ``[..., token]`` of the layout, ``fill`` elsewhere."""
        values = np.asarray(values)
        out = np.full(values.shape[:-1] + (self.layout.n,), fill, dtype=np.float64)
        out[..., self.nodes] = values
        return out

    # ---- residual-augmented transition --------------------------------------------------
    def transition(self, layer_pos: int, dtype=np.float64) -> np.ndarray:
        """``rownorm((1 - r)·A + r·I)`` of the layer at ``layer_pos`` ([node, node], or [head, node, node])."""
        a = self.attention[layer_pos].astype(dtype)
        r = self.residual
        aug = (1.0 - r) * a
        idx = np.arange(self.num_nodes)
        aug[..., idx, idx] += r
        sums = aug.sum(axis=-1, keepdims=True)
        return aug / np.where(sums > 0, sums, 1.0)

    # ---- segment-level view -------------------------------------------------------------
    def group_nodes(self) -> dict[str, np.ndarray]:
        """``layout.groups()`` as node positions."""
        return {name: self.node_index(idx) for name, idx in self.layout.groups().items()}

    def segment_matrix(self, layer_pos: int, *, augmented: bool = False) -> tuple[list[str], np.ndarray]:
        """Mean attention mass from each group's queries to each group's keys.

        Returns:
          (names, M) with M float64 [group, group]: M[a, b] = mean over query tokens of group a of
          the mass they put on the keys of group b; rows sum to 1 (over groups).
        """
        if self.keeps_heads:
            raise FlowlensError("segment_matrix needs fused heads; call graph.fused('mean') first.")
        a = self.transition(layer_pos) if augmented else self.attention[layer_pos].astype(np.float64)
        groups = self.group_nodes()
        names = list(groups)
        mat = np.zeros((len(names), len(names)))
        for j, kn in enumerate(names):
            col = a[:, groups[kn]].sum(axis=1)
            for i, qn in enumerate(names):
                mat[i, j] = col[groups[qn]].mean()
        return names, mat

    def to_networkx(self, *, augmented: bool = False, min_weight: float = 0.0):
        """The coarse layered segment graph as a ``networkx.DiGraph``.

        Nodes are ``(layer_level, group)`` for levels 0..L (0 = input embeddings, level i+1 = output
        of the i-th graph layer); an edge ``(i+1, a) → (i, b)`` has ``weight`` = mean mass group a's
        queries put on group b's keys in that layer. Edges with weight <= ``min_weight`` are left out.
        """
        import networkx as nx

        g = nx.DiGraph(layers=list(self.layers), step=self.step, heads=self.heads, residual=self.residual)
        names = list(self.layout.groups())
        for level in range(self.num_layers + 1):
            for name in names:
                g.add_node((level, name), level=level, group=name,
                           layer=None if level == 0 else self.layers[level - 1])
        for i in range(self.num_layers):
            _, mat = self.segment_matrix(i, augmented=augmented)
            for a, qn in enumerate(names):
                for b, kn in enumerate(names):
                    if mat[a, b] > min_weight:
                        g.add_edge((i + 1, qn), (i, kn), weight=float(mat[a, b]), layer=self.layers[i])
        return g
