"""Rollout of every denoising step at once, sharing the prefix work.

The prefix pass runs once per inference, so the prefix rows of the attention graph are the same
at every denoising step; only the suffix rows (state + actions) change. With nodes ordered
[prefix | suffix] each layer's transition ``T_l = rownorm((1 - r)·A_l + r·I)`` (Abnar & Zuidema,
2020) is block lower-triangular, and the rollout ``J_l = T_l J_{l-1}`` splits into

    J^P_l = T^PP_l J^P_{l-1}                          (prefix × prefix, the same for every step)
    J^S_l = T^SP_l J^P_{l-1} + T^SS_l J^S_{l-1}        (suffix rows, per step)

so the prefix product is computed once (O(L·p³)) and every step adds only O(L·s·p²) — the
``"forward"`` method, which yields the rollout after *every* layer. For the last layer only,
the ``"stacked"`` method runs the row chain ``e_q T_L ⋯ T_0`` right-to-left with all steps'
query rows stacked, so the shared prefix block is one GEMM per layer for all steps. ``"per_step"``
stitches each step's graph and runs the ordinary rollout kernel (the reference). ``"auto"``
picks the cheapest by a multiply-add count. Products run in float32 (row normalisers summed in
float64) like ``flowlens.rollout``; with ``precision="float64"`` they match
``flowlens.rollout`` per step to ~1e-15.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from flowlens.analysis.rows import query_tokens
from flowlens.analysis.rollout import rollout_rows
from flowlens.core.capture import AttentionPass, Capture
from flowlens.core.checks import LAYER_IDS, STEP_IDS, check_choice, check_flag, check_residual, check_type, index_array
from flowlens.core.graph import check_heads, fuse_heads, heads_label
from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError, check_index, unknown_name_error

METHODS = ("auto", "forward", "stacked", "per_step")


def resolve_steps(capture: Capture, steps: str | int | Sequence[int] = "all") -> tuple[int, ...]:
    """Recorded step ids from "all", one step id, or a list (negative ids count from the last recorded)."""
    check_type("capture", capture, Capture, "Load one with flowlens.load_capture(path).")
    if capture.num_steps == 0:
        raise FlowlensError("this capture recorded no denoising steps (suffix passes).")
    if isinstance(steps, str):
        if steps != "all":
            raise unknown_name_error("steps", steps, ("all",))
        return capture.step_ids
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, (bool, np.bool_)):
        return (capture.step(int(steps)).step,)
    if isinstance(steps, Sequence | np.ndarray) and len(steps) == 0:
        raise FlowlensError("steps is empty; give 'all', a step index or a non-empty list.")
    return tuple(capture.step(int(s)).step for s in index_array("steps", steps, expected=STEP_IDS))


@dataclasses.dataclass(frozen=True, eq=False)
class StepRollout:
    """Rollout of the same queries at several denoising steps.

    Attributes:
      layout: the token layout.
      values: float64 [step, layer, query, token]: rollout after each layer (or the last only),
        0 at masked / padding tokens.
      query_tokens: int64 [query] layout indices of the queries.
      layers: model layer id of each entry of the layer axis.
      steps: denoising step of each entry of the step axis; times: their flow times.
      heads: head fusion label; residual: r; method: how it was computed.
    """

    layout: TokenLayout
    values: np.ndarray
    query_tokens: np.ndarray
    layers: tuple[int, ...]
    steps: tuple[int, ...]
    times: tuple[float | None, ...]
    heads: str
    residual: float
    method: str

    @property
    def final(self) -> np.ndarray:
        """float64 [step, query, token]: rollout after the last layer."""
        return self.values[:, -1]

    def mean(self) -> np.ndarray:
        """float64 [layer, query, token]: mean over the steps."""
        return self.values.mean(axis=0)

    def group_shares(self, layer: int = -1) -> tuple[tuple[str, ...], np.ndarray]:
        """(group names, float64 [step, group]): mean over queries of the rollout mass per group."""
        pos = check_index("layer", layer, len(self.layers), "rollout layers") if layer < 0 else None
        if pos is None:
            if layer not in self.layers:
                raise FlowlensError(
                    f"layer {layer} is not in this rollout; it holds layers {list(self.layers)}."
                )
            pos = self.layers.index(layer)
        groups = self.layout.groups()
        vals = self.values[:, pos]
        return tuple(groups), np.stack(
            [vals[..., idx].sum(axis=-1).mean(axis=-1) for idx in groups.values()], axis=-1
        )


def _fused(p: AttentionPass, layers, heads, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """float32 [layer, row, col] of pass ``p``, heads fused exactly as TokenGraph does."""
    if p.head_reduction is not None and not (isinstance(heads, str) and heads == p.head_reduction):
        raise FlowlensError(
            f"heads={heads!r} was asked for, but the {p.kind.value} pass stored only the "
            f"{p.head_reduction!r} of "
            f"all heads; use heads={p.head_reduction!r} or record all heads."
        )
    order = np.argsort(p.query_rows, kind="stable")
    pos = order[np.clip(np.searchsorted(p.query_rows[order], rows), 0, p.query_rows.size - 1)]
    if not np.array_equal(p.query_rows[pos], rows):
        raise FlowlensError(
            f"the {p.kind.value} pass recorded {p.query_rows.size} query rows but the rollout needs "
            "every valid row "
            f"({rows.size}); record all rows of that pass."
        )
    out = np.empty((len(layers), rows.size, cols.size), dtype=np.float32)
    for i, layer in enumerate(layers):
        src = p.probs[p.layer_index(layer)]
        fused = src[0] if p.head_reduction is not None else fuse_heads(src, heads, axis=0)
        out[i] = fused[pos][:, cols]
    return out


def _norm(a: np.ndarray, r: float, dt) -> np.ndarray:
    """Row normalisers d = (1 - r)·rowsum(A) + r of the folded transition (summed in float64)."""
    d = (1.0 - r) * a.sum(axis=-1, dtype=np.float64) + r
    d[d <= 0] = 1.0
    return d.astype(dt)


def rollout_costs(
    *, num_layers: int, num_steps: int, prefix: int, suffix: int, queries: int, all_layers: bool
) -> dict[str, float]:
    """Multiply-add counts of each method (what ``method="auto"`` minimises).

    Args:
      num_layers, num_steps: L and S; prefix, suffix: valid prefix / suffix nodes p, s;
      queries: q; all_layers: rollout after every layer or only the last.
    Returns:
      {method: multiply-adds}; "stacked" only when ``all_layers`` is False.
    """
    big_l, big_s, p, s, q = num_layers, num_steps, prefix, suffix, queries
    m = p + s
    cost = {"forward": big_l * p**3 + big_s * big_l * (s * p * p + s * s * m)}
    chains = big_l * (big_l + 1) / 2 * q * m * m  # rollout_rows' multi-chain (or full products)
    cost["per_step"] = big_s * (min(chains, big_l * m**3) if all_layers else big_l * q * m * m)
    if not all_layers:
        cost["stacked"] = big_l * big_s * q * (p * p + s * m)
    return cost


def rollout_all_steps(
    capture: Capture,
    *,
    heads: str | int | Sequence[int] = "mean",
    residual: float | None = 0.5,
    query=None,
    steps: str | int | Sequence[int] = "all",
    layers: Sequence[int] | None = None,
    all_layers: bool = True,
    method: str = "auto",
    precision: str = "float32",
    **select,
) -> StepRollout:
    """Rollout of the chosen queries at every (or the chosen) denoising step.

    Args:
      capture: a Capture with all valid prefix rows (prefix pass) and all valid suffix rows per step.
      heads: "mean" | "max" | "min" | a head index | a list of heads (as TokenGraph.from_capture).
      residual: r of rownorm((1 - r)·A + r·I); None = 0.
      query: layout token indices, or selection keywords (**select); default: the action tokens.
      steps: "all", a step index or a list of steps.
      layers: model layers to roll out over (default: all recorded).
      all_layers: rollout after every layer (default) or only after the last.
      method: "auto" (cheapest), "forward" (shared prefix J^P), "stacked" (last layer only), "per_step".
      precision: dtype of the matrix products, "float32" (default, as ``flowlens.rollout``; row
        normalisers summed in float64) or "float64" (matches ``rollout(..., precision="float64")``
        to ~1e-15).
    Returns:
      StepRollout with values float64 [step, layer, query, token] (layer axis of 1 when not all_layers).
    """
    check_choice("method", method, METHODS)
    check_choice("precision", precision, ("float32", "float64"))
    dt = np.dtype(precision).type
    if method == "stacked" and all_layers:
        raise FlowlensError(
            "method='stacked' gives the last layer only; use all_layers=False or method='forward'."
        )
    check_type("capture", capture, Capture, "Load one with flowlens.load_capture(path).")
    r = check_residual(residual) or 0.0
    all_layers = check_flag("all_layers", all_layers)
    heads = check_heads(heads, keep=True)
    if isinstance(heads, str) and heads == "keep":
        raise FlowlensError("rollout needs fused heads; give heads='mean' (or 'max', 'min', a head, a list).")
    layout = capture.layout
    if capture.prefix is None:
        raise FlowlensError("rollout across steps needs the prefix pass; this capture has none.")
    step_ids = resolve_steps(capture, steps)
    passes = [capture.step(s) for s in step_ids]
    available = sorted(set(capture.prefix.layers).intersection(*(set(p.layers) for p in passes)))
    if layers is None:
        layers = available
    else:
        ids = index_array("layers", layers, expected=LAYER_IDS)
        layers = sorted(check_index("layer", x, capture.num_layers, "layers") for x in ids)
        missing = [x for x in layers if x not in available]
        if missing:
            raise FlowlensError(
                f"layer {missing[0]} was not recorded in every pass needed; recorded: {available}."
            )
    tokens = query_tokens(layout, query, select)
    nodes = np.flatnonzero(layout.valid)
    p = int((nodes < layout.prefix_len).sum())
    m = nodes.size
    s = m - p
    qnodes = np.searchsorted(nodes, tokens)
    a_pre = _fused(capture.prefix, layers, heads, nodes[:p], nodes[:p])  # [L, p, p]
    a_suf = np.stack([_fused(ps, layers, heads, nodes[p:], nodes) for ps in passes])  # [S, L, s, m]
    num_l, num_s, q = len(layers), len(step_ids), tokens.size
    if method == "auto":
        cost = rollout_costs(
            num_layers=num_l, num_steps=num_s, prefix=p, suffix=s, queries=q, all_layers=all_layers
        )
        method = min(cost, key=cost.get)
    if method == "forward":
        vals = _forward(a_pre, a_suf, r, qnodes, p, all_layers, dt)
    elif method == "stacked":
        vals = _stacked(a_pre, a_suf, r, qnodes, p, dt)
    else:
        vals = np.empty((num_s, num_l if all_layers else 1, q, m))
        full = np.zeros((num_l, m, m), dtype=np.float32)
        full[:, :p, :p] = a_pre
        for i in range(num_s):
            full[:, p:] = a_suf[i]
            vals[i] = rollout_rows(full, qnodes, residual=r, all_layers=all_layers, precision=precision)
    out = np.zeros(vals.shape[:-1] + (layout.n,))
    out[..., nodes] = vals
    return StepRollout(
        layout=layout,
        values=out,
        query_tokens=tokens,
        layers=tuple(layers) if all_layers else tuple(layers[-1:]),
        steps=step_ids,
        times=tuple(ps.time for ps in passes),
        heads=heads_label(heads),
        residual=r,
        method=method,
    )


def _forward(a_pre, a_suf, r, qnodes, p, all_layers, dt) -> np.ndarray:
    """Forward recursion with the prefix rollout J^P shared by all steps: float64 [S, L|1, q, m].

    Per layer: J^S ← (T^SP J^P + T^SS J^S) for all steps at once (the T^SP J^P product of every
    step stacked into one GEMM), then J^P ← T^PP J^P.
    """
    num_s, num_l, s, m = a_suf.shape
    jp = np.eye(p, dtype=dt)
    js = np.zeros((num_s, s, m), dtype=dt)
    js[:, :, p:] = np.eye(s)
    pre_q = qnodes < p
    out = np.empty((num_s, num_l if all_layers else 1, qnodes.size, m))  # float64
    for layer in range(num_l):
        a = a_pre[layer].astype(dt, copy=False)
        d_p = _norm(a_pre[layer], r, dt)
        b = a_suf[:, layer].astype(dt, copy=False)  # [S, s, m]
        d_s = _norm(a_suf[:, layer], r, dt)  # [S, s]
        acc = np.matmul(b[:, :, p:], js)  # T^SS J^S: [S, s, m]
        acc[:, :, :p] += (b[:, :, :p].reshape(-1, p) @ jp).reshape(num_s, s, p)  # T^SP J^P, stacked
        acc *= dt(1.0 - r)
        acc += dt(r) * js
        acc /= d_s[:, :, None]
        js = acc
        jp = (dt(1.0 - r) * (a @ jp) + dt(r) * jp) / d_p[:, None]
        if all_layers or layer == num_l - 1:
            k = layer if all_layers else 0
            out[:, k, ~pre_q] = js[:, qnodes[~pre_q] - p]
            out[:, k, pre_q, :p] = jp[qnodes[pre_q]]
            out[:, k, pre_q, p:] = 0.0
    return out


def _stacked(a_pre, a_suf, r, qnodes, p, dt) -> np.ndarray:
    """Right-to-left row chain e_q T_L ⋯ T_0 with every step's rows stacked: float64 [S, 1, q, m]."""
    num_s, num_l, s, m = a_suf.shape
    q = qnodes.size
    vp = np.zeros((num_s, q, p), dtype=dt)
    vs = np.zeros((num_s, q, s), dtype=dt)
    pre_q = qnodes < p
    vp[:, np.flatnonzero(pre_q), qnodes[pre_q]] = 1.0
    vs[:, np.flatnonzero(~pre_q), qnodes[~pre_q] - p] = 1.0
    for layer in reversed(range(num_l)):
        a = a_pre[layer].astype(dt, copy=False)
        wp = vp / _norm(a_pre[layer], r, dt)
        new_p = dt(1.0 - r) * (wp.reshape(-1, p) @ a).reshape(num_s, q, p) + dt(r) * wp  # shared block
        b = a_suf[:, layer].astype(dt, copy=False)  # [S, s, m]
        ws = vs / _norm(a_suf[:, layer], r, dt)[:, None, :]
        prod = dt(1.0 - r) * np.matmul(ws, b)  # [S, q, m]
        new_p += prod[..., :p]
        vp, vs = new_p, prod[..., p:] + dt(r) * ws
    return np.concatenate([vp, vs], axis=-1)[:, None].astype(np.float64)
