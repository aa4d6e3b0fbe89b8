"""Input validation for the attention-flow entry points (every message: argument, expectation,
what was received, a fix)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flowlens.core.checks import check_residual as check_residual  # one residual check for all entries
from flowlens.core.checks import index_array, real_array
from flowlens.errors import FlowlensError, check_index


def check_attention(attention, *, fused: bool) -> np.ndarray:
    """Return ``attention`` as an ndarray after checking dtype, rank, squareness, finiteness and range [0, 1]."""
    a = real_array("attention", attention)
    want = "(layer, query, key)" if fused else "(layer, head, query, key)"
    rank = 3 if fused else 4
    if a.ndim != rank or a.shape[-1] != a.shape[-2] or min(a.shape, default=0) == 0:
        hint = (" It looks head-fused: attention_flow takes [layer, query, key] as it is."
                if not fused and a.ndim == 3 else
                " It has a head axis: call attention_flow, or fuse heads first." if fused and a.ndim == 4
                else "")
        raise FlowlensError(
            f"attention must have shape {want} with query == key and no empty axis, got "
            f"{a.shape}.{hint}"
        )
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise FlowlensError(
            f"attention must be finite, got {a[tuple(bad)]} at index {tuple(int(i) for i in bad)}; "
            "replace masked logits' probabilities with 0 (not NaN) or drop those tokens with valid=."
        )
    if (a < 0).any():
        bad = np.argwhere(a < 0)[0]
        raise FlowlensError(
            f"attention must be non-negative (probabilities), got {a[tuple(bad)]} at index "
            f"{tuple(int(i) for i in bad)}; pass softmax outputs, not logits."
        )
    if (a > 1 + 1e-6).any():
        bad = np.argwhere(a > 1 + 1e-6)[0]
        raise FlowlensError(
            f"attention must hold probabilities in [0, 1], got {a[tuple(bad)]} at index "
            f"{tuple(int(i) for i in bad)}; pass softmax outputs (not scores or sums of heads)."
        )
    return a


def check_valid(valid, n: int) -> np.ndarray | None:
    if valid is None:
        return None
    v = np.asarray(valid)
    if v.dtype != bool or v.shape != (n,):
        raise FlowlensError(
            f"valid must be a bool array of shape ({n},) (one flag per token), got dtype {v.dtype} "
            f"and shape {v.shape}; build it with e.g. np.ones({n}, bool)."
        )
    if not v.any():
        raise FlowlensError("valid marks no token as valid; at least the query and one source must be valid.")
    return v


def token_positions(argument: str, tokens, n: int, position: np.ndarray, *, allow_none: bool = False,
                    what: str = "tokens") -> np.ndarray | None:
    """Map token indices (negative from the end; or a bool mask [n]) to positions among valid tokens.

    ``position[token]`` is the compressed index of a valid token and -1 for an invalid one.
    """
    if tokens is None:
        if allow_none:
            return None
        raise FlowlensError(f"{argument} is required: pass token indices, e.g. {argument}=[{n - 1}].")
    arr = index_array(argument, tokens, size=n)
    out = np.array([check_index(argument, t, n, what) for t in arr.tolist()], dtype=np.int64)
    pos = position[out]
    if (pos < 0).any():
        bad = int(out[np.argmax(pos < 0)])
        raise FlowlensError(
            f"{argument} contains token {bad}, which valid= marks invalid (removed from the graph); "
            "drop it from the selection or mark it valid."
        )
    return out


def check_source_sets(source_sets, n: int, position: np.ndarray) -> dict[str, np.ndarray]:
    if source_sets is None:
        return {}
    if not isinstance(source_sets, Mapping):
        raise FlowlensError(
            f"source_sets must be a mapping name -> token indices, got {type(source_sets).__name__}; "
            "e.g. source_sets={'camera': np.arange(256)}."
        )
    out = {}
    for name, idx in source_sets.items():
        toks = token_positions(f"source_sets[{name!r}]", idx, n, position)
        out[str(name)] = np.unique(toks)
    return out


def check_layers_out(layers_out, num_layers: int) -> tuple[int, ...]:
    if layers_out is None:
        return ()
    if isinstance(layers_out, str):
        if layers_out != "all":
            raise FlowlensError(
                f"layers_out must be 'all', an int or a sequence of ints (node layers 0–{num_layers - 1}), "
                f"got {layers_out!r}."
            )
        return tuple(range(num_layers))
    items = index_array("layers_out", layers_out, expected="'all', an int or a sequence of ints").tolist()
    return tuple(check_index("layers_out", k, num_layers, "node layers below the query") for k in items)


def check_tol(tol) -> float:
    t = float(tol)
    if not 0.0 <= t <= 1e-6:
        raise FlowlensError(
            f"tol must be in [0, 1e-6] (residual capacities <= tol count as saturated), got {tol!r}; "
            "use the default 1e-12."
        )
    return t


def check_prune(prune) -> float | None:
    if prune is None or prune == 0:
        return None
    p = float(prune)
    if not 0.0 < p < 1.0:
        raise FlowlensError(
            f"prune must be None or in (0, 1) (fraction of the uniform weight 1/n below which edges are "
            f"dropped), got {prune!r}; try 0.05."
        )
    return p


def check_workers(workers) -> int | None:
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise FlowlensError(f"workers must be a positive int or None (all cores), got {workers!r}.")
    return int(workers)
