"""Query rows: the attention rows of chosen query tokens, read out of a Capture (or a TokenGraph).

Every reader of raw attention rows goes through ``read_rows``, so what is valid is decided once:

- a query row is read from the pass that holds it: the suffix pass of the chosen denoising step
  for state / action queries, the prefix pass for image / text queries (one full pass serves both);
- masked-camera and padding *queries* are refused: their rows are the uniform garbage softmax
  returns for fully masked rows (reference/landscape.md §3.1);
- masked-camera and padding *keys* are dropped (they carry ~0 mass): rows run over the layout's
  valid tokens, ``HeadAttention.key_tokens``; ``HeadAttention.on_layout`` spreads them back over
  the whole layout with NaN at those keys (and at keys outside a prefix query's pass);
- heads are kept, taken as stored (a capture may hold only their mean), or fused.

Only the rows asked for are copied — typically the 50 action rows × the valid keys — never
``[layer, head, n, n]``. The per-head analyses (``heads``, ``head_roles``, ``head_grids``,
``actions``, ``steps``) take ``head_attention``; the pipeline, the report and the batch examples
take ``read_rows``.

    rows = read_rows(capture, layout.select(kind="action"), step=0, heads="mean")
    rows.probs                 # float32 [layer, 1, 50, valid key]
    rows.on_layout()           # float64 [layer, 1, 50, token], NaN at masked / padding keys
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from flowlens.core.capture import AttentionPass, Capture, PassKind, resolve_layers
from flowlens.core.graph import TokenGraph, fuse_heads
from flowlens.core.layout import TokenLayout
from flowlens.core.checks import LAYER_IDS, index_array
from flowlens.core.query import select_query
from flowlens.errors import FlowlensError


@dataclasses.dataclass(frozen=True, eq=False)
class HeadAttention:
    """Attention of selected queries at one denoising step, per head, over the valid keys.

    Attributes:
      layout: the token layout.
      probs: [layer, head, query, key]: raw probabilities of each query row on each valid key
        token (masked-camera and padding keys removed; prefix queries have 0 on suffix keys).
        The head axis holds every head, or one fused / stored-reduced head (``read_rows``).
      query_tokens: int64 [query]: layout index of each query.
      key_tokens: int64 [key]: layout index of each key (the layout's valid tokens, in order).
      layers: model layer id of each entry of the layer axis.
      step: denoising step of the suffix rows (None for a full pass or prefix-only queries).
      time: flow-matching time of that step.
      key_stop: int64 [query]: keys at or past this layout index were outside the pass the
        query's row came from (prefix_len for prefix queries); None: every key was inside.
    """

    layout: TokenLayout
    probs: np.ndarray
    query_tokens: np.ndarray
    key_tokens: np.ndarray
    layers: tuple[int, ...]
    step: int | None = None
    time: float | None = None
    key_stop: np.ndarray | None = None

    @property
    def num_layers(self) -> int:
        return self.probs.shape[0]

    @property
    def num_heads(self) -> int:
        return self.probs.shape[1]

    def key_positions(self, tokens: np.ndarray | Sequence[int]) -> np.ndarray:
        """Positions on the key axis of layout tokens; masked / padding tokens raise."""
        return key_positions(self.layout, self.key_tokens, tokens)

    def on_layout(self) -> np.ndarray:
        """float64 [layer, head, query, token] over the whole layout: NaN at masked / padding keys
        and at keys outside the pass each query's row came from."""
        out = np.full(self.probs.shape[:-1] + (self.layout.n,), np.nan)
        out[..., self.key_tokens] = self.probs
        if self.key_stop is not None:
            outside = np.arange(self.layout.n)[None, :] >= self.key_stop[:, None]  # [query, token]
            out[..., outside] = np.nan
        return out


def key_positions(layout: TokenLayout, key_tokens: np.ndarray, tokens) -> np.ndarray:
    """Positions in the sorted ``key_tokens`` of layout ``tokens`` (int64 [k]); tokens that are not
    keys (masked cameras, padding) raise FlowlensError."""
    tokens = np.atleast_1d(np.asarray(tokens, dtype=np.int64))
    pos = np.clip(np.searchsorted(key_tokens, tokens), 0, key_tokens.size - 1)
    bad = tokens[key_tokens[pos] != tokens]
    if bad.size:
        raise _masked(
            layout, "token", bad[0], ": it is not a key of this analysis. Select valid tokens "
            "(layout.select(..., valid_only=True))."
        )
    return pos


def _masked(layout: TokenLayout, what: str, token, advice: str) -> FlowlensError:
    """The error for a masked-camera / padding ``token`` used as ``what``."""
    seg = layout.segment_of_token(int(token))
    return FlowlensError(f"{what} {int(token)} ({seg.name}) is masked or padding{advice}")


def query_tokens(layout: TokenLayout, query=None, select: dict | None = None) -> np.ndarray:
    """Resolve a query selection: token indices (ints, or a bool mask over the layout), a query name
    ("action:0", "actions", "state" ...; see ``flowlens.core.query``), or ``layout.select`` keywords,
    default the actions.

    Returns:
      int64 [query] valid layout token indices.
    """
    if query is not None and select:
        raise FlowlensError("give either query token indices or selection keywords, not both.")
    if query is None:
        return layout.select(**select) if select else layout.select(kind="action")
    if isinstance(query, str):
        query = select_query(layout, query)
    tokens = index_array("query", query, size=layout.n)
    bad = tokens[(tokens < 0) | (tokens >= layout.n)]
    if bad.size:
        raise FlowlensError(f"query token {int(bad[0])} out of range: the layout has {layout.n} tokens.")
    invalid = tokens[~layout.valid[tokens]]
    if invalid.size:
        raise _masked(
            layout, "query token", invalid[0], "; its attention row is the uniform garbage softmax returns "
            "for fully masked rows. Query valid tokens only."
        )
    return tokens


def _positions(recorded: np.ndarray, wanted: np.ndarray, what: str) -> np.ndarray:
    order = np.argsort(recorded, kind="stable")
    pos = np.clip(np.searchsorted(recorded[order], wanted), 0, recorded.size - 1)
    found = recorded[order][pos] == wanted
    if not found.all():
        raise FlowlensError(
            f"query token {int(wanted[~found][0])} was not recorded in {what} ({recorded.size} rows "
            "recorded). Record those rows, or query tokens that were recorded."
        )
    return order[pos]


def take_columns(arr: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``arr[..., cols]`` for sorted ``cols``, copied run by run (valid keys form a few contiguous
    runs — cameras, prompt, suffix — and slice copies are much faster than a fancy-index gather)."""
    breaks = np.flatnonzero(np.diff(cols) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [cols.size]])
    if cols.size == 0 or starts.size > 16:
        return arr[..., cols]
    out = np.empty(arr.shape[:-1] + (cols.size,), dtype=arr.dtype)
    for a, b in zip(starts, stops, strict=True):
        out[..., a:b] = arr[..., cols[a] : cols[a] + (b - a)]
    return out


def _as_index(pos: np.ndarray):
    """A slice when ``pos`` is a contiguous ascending run (a view instead of a copy)."""
    if pos.size and np.array_equal(pos, np.arange(pos[0], pos[0] + pos.size)):
        return slice(int(pos[0]), int(pos[0]) + pos.size)
    return pos


def head_attention(
    source, *, step: int = 0, query=None, layers: Sequence[int] | None = None, **select
) -> HeadAttention:
    """Per-head attention rows of the selected queries.

    Args:
      source: a Capture (per-head passes; only the passes holding the query rows are needed),
        a TokenGraph built with ``heads="keep"``, or a HeadAttention (returned unchanged).
      step: denoising step of suffix queries (ignored for a TokenGraph: it has one step).
      query: layout token indices of the queries, or selection keywords (``kind=``, ``horizon=``,
        ``group=``, ``camera=``, ``words=``). Default: all action tokens.
      layers: model layers to include (default: all recorded in the passes used).
    Returns:
      HeadAttention with probs float32 [layer, head, query, key].
    Raises:
      FlowlensError: fused-head source, missing pass / rows / layers, masked query tokens.
    """
    if isinstance(source, HeadAttention):
        if query is not None or select or layers is not None:
            raise FlowlensError("source is already a HeadAttention; select queries/layers when building it.")
        return source
    if isinstance(source, TokenGraph):
        return _from_graph(source, query, layers, select)
    if isinstance(source, Capture):
        return _from_capture(source, step, query, layers, select)
    raise FlowlensError(
        "source must be a Capture, a TokenGraph (heads='keep') or a HeadAttention, "
        f"got {type(source).__name__}."
    )


def _from_graph(graph: TokenGraph, query, layers, select) -> HeadAttention:
    if not graph.keeps_heads:
        raise FlowlensError(
            f"per-head analysis needs every head, but this graph fused them ({graph.heads}); build it with "
            "TokenGraph.from_capture(capture, step, heads='keep'), or pass the Capture itself."
        )
    tokens = query_tokens(graph.layout, query, select)
    nodes = graph.node_index(tokens)
    lpos = (list(range(graph.num_layers)) if layers is None else
            [graph.layer_position(x) for x in index_array("layers", layers, expected=LAYER_IDS).tolist()])
    probs = graph.attention[_as_index(np.asarray(lpos))][:, :, _as_index(nodes), :]
    return HeadAttention(
        layout=graph.layout,
        probs=np.ascontiguousarray(probs, dtype=np.float32),
        query_tokens=tokens,
        key_tokens=graph.nodes.copy(),
        layers=tuple(graph.layers[i] for i in lpos),
        step=graph.step,
        time=graph.time,
    )


def _from_capture(capture: Capture, step, query, layers, select) -> HeadAttention:
    return read_rows(capture, query_tokens(capture.layout, query, select), step=step, layers=layers)


def _passes(capture: Capture, tokens: np.ndarray, step) -> list[tuple[AttentionPass, np.ndarray]]:
    """The passes holding the rows of ``tokens`` and which tokens each holds (bool [query]).

    Suffix queries (state, actions) are read from the suffix pass of ``step``, prefix queries
    (patches, words) from the prefix pass; a capture of one full pass (no steps) serves both.
    """
    in_prefix = tokens < capture.layout.prefix_len
    if capture.full is not None and (not capture.steps or (capture.prefix is None and in_prefix.all())):
        return [(capture.full, np.ones(tokens.size, dtype=bool))]
    parts = []
    if in_prefix.any():
        if capture.prefix is None:
            raise FlowlensError(
                "prefix queries were selected but this capture has no prefix pass; query suffix tokens "
                "(e.g. kind='action') or record the prefix pass."
            )
        parts.append((capture.prefix, in_prefix))
    if (~in_prefix).any():
        parts.append((capture.step(step), ~in_prefix))
    return parts


def _heads_of(block: np.ndarray, p: AttentionPass, heads) -> np.ndarray:
    """[layer, head, query, key] of the pass → the head axis ``heads`` asks for (1 when fused)."""
    if p.head_reduction is not None:
        if heads == "keep":
            raise FlowlensError(
                f"per-head analysis needs every head, but the {p.kind.value} pass stored only the "
                f"{p.head_reduction!r} of the heads; record all heads (head_reduction=None)."
            )
        if heads not in ("stored", "mean", p.head_reduction):
            raise FlowlensError(
                f"heads={heads!r}: the capture stored only the {p.head_reduction} over heads; re-run with all "
                "heads kept for --heads or per-head views."
            )
        return block
    if heads in ("keep", "stored"):
        return block
    return fuse_heads(block, heads, axis=1)[:, None]


def read_rows(
    capture: Capture,
    tokens: np.ndarray | Sequence[int],
    *,
    step: int = 0,
    layers: Sequence[int] | None = None,
    heads="keep",
) -> HeadAttention:
    """The attention rows of query ``tokens`` at denoising ``step``, over the valid keys.

    Each query row comes from the pass that holds it (``_passes``). Masked-camera and padding
    *queries* are refused (their rows are softmax garbage); masked and padding *keys* are dropped;
    prefix queries have 0 on the suffix keys (``HeadAttention.on_layout`` can mark those NaN).

    Args:
      capture: a Capture holding the rows of ``tokens``.
      tokens: int [query] layout indices of valid tokens (e.g. from ``query_tokens``).
      step: denoising step id of suffix queries (negative counts from the last recorded).
      layers: model layers (default: every layer the passes used recorded).
      heads: "keep" (every head; a head-reduced pass is refused), "stored" (what each pass holds:
        every head, or its one reduced slot), or a ``fuse_heads`` argument ("mean", a head, a list
        of heads) fused into a head axis of size 1 ("mean" also reads a mean-reduced pass).
    Returns:
      HeadAttention with probs [layer, head, query, key] in the capture's dtype (float32, or
      float16 from a float16 store); head = num_heads, or 1 when fused / reduced.
    Raises:
      FlowlensError: masked / out-of-range queries, a missing pass / row / layer, heads the
        capture cannot give.
    """
    layout = capture.layout
    tokens = query_tokens(layout, tokens)
    keys = np.flatnonzero(layout.valid)
    parts = _passes(capture, tokens, step)
    layers = resolve_layers([p for p, _ in parts], layers, capture.num_layers)
    out = None
    key_stop = np.zeros(tokens.size, dtype=np.int64)
    for p, which in parts:
        what = f"the {p.kind.value} pass" + (f" of step {p.step}" if p.step is not None else "")
        rows = _as_index(_positions(p.query_rows, tokens[which], what))
        lsel = _as_index(np.asarray([p.layer_index(x) for x in layers]))
        kcols = keys[keys < p.key_count]
        key_stop[which] = p.key_count
        block = _heads_of(p.probs[lsel][:, :, rows], p, heads)
        if kcols.size != p.key_count:
            block = take_columns(block, kcols)
        if len(parts) == 1 and kcols.size == keys.size:
            out = np.ascontiguousarray(block)
            break
        if out is None:
            out = np.zeros((len(layers), block.shape[1], tokens.size, keys.size), dtype=np.float32)
        elif out.shape[1] != block.shape[1]:
            raise FlowlensError("the prefix and suffix passes stored different heads; record both the same way.")
        out[:, :, np.flatnonzero(which), : kcols.size] = block
    suffix = next((p for p, _ in parts if p.kind == PassKind.SUFFIX), None)
    return HeadAttention(
        layout=layout,
        probs=out,
        query_tokens=tokens,
        key_tokens=keys,
        layers=layers,
        step=None if suffix is None else suffix.step,
        time=None if suffix is None else suffix.time,
        key_stop=key_stop,
    )


def action_group_mass(capture) -> list[dict]:
    """A minimal per-frame analysis (examples, tests, benchmarks): for each denoising step and
    layer, the attention mass the action queries (heads and action rows averaged) put on each
    token group of ``capture.layout.groups()``.

    Returns:
      rows ``{"step", "layer", "group", "mass"}``; the masses of one (step, layer) sum to ≈ 1.
    """
    layout = capture.layout
    groups = layout.groups()
    act = layout.actions
    rows = []
    for p in capture.steps:
        recorded = act.indices[np.isin(act.indices, p.query_rows)]  # the action rows this pass kept
        if recorded.size == 0:
            continue
        block = read_rows(capture, recorded, step=p.step, heads="stored")  # [layer, head, query, valid key]
        mean = block.probs.mean(axis=(1, 2), dtype=np.float64)  # [layer, valid key]
        cols = {g: block.key_positions(idx) for g, idx in groups.items()}
        for li, layer in enumerate(block.layers):
            rows += [
                {"step": p.step, "layer": layer, "group": g, "mass": float(mean[li, c].sum())} for g, c in cols.items()
            ]
    return rows
