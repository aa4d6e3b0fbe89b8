"""Per-frame measures for statistics: attention mass and rollout share between two token selections.

A selection is a group name of ``TokenLayout.groups()`` ("words", "actions", a camera name, ...),
a list of group names, a dict of ``TokenLayout.select`` criteria (``{"words": "red"}``,
``{"camera": "base_0_rgb"}``), or token indices. Unknown names fail with the layout's
did-you-mean ``FlowlensError``. These are the building blocks until the selection language and
routing tables of issue 16 land; they read a ``TokenGraph`` (pure functions, no model).

    >>> import numpy as np
    >>> from flowlens.core.graph import TokenGraph
    >>> from flowlens.core.openpi_layout import pi05_layout
    >>> lay = pi05_layout("pick the cube", grid=(2, 2), max_token_len=8, action_horizon=2)
    >>> n = lay.n
    >>> att = np.tril(np.ones((1, 1, n, n))); att /= att.sum(-1, keepdims=True)
    >>> g = TokenGraph.from_attention(lay, att)
    >>> round(float(mass(g, "actions", "words")), 4) > 0
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from flowlens.errors import FlowlensError


def tokens(layout, selection) -> np.ndarray:
    """int64 [k] layout token indices of a selection (see the module docstring)."""
    if isinstance(selection, str):
        return layout.select(group=selection)
    if isinstance(selection, Mapping):
        return layout.select(**dict(selection))
    sel = list(selection.tolist() if isinstance(selection, np.ndarray) else selection)
    if sel and all(isinstance(s, str) for s in sel):
        return layout.select(group=sel)
    if not sel or not all(isinstance(s, int | np.integer) and not isinstance(s, bool) for s in sel):
        raise FlowlensError(
            f"a token selection must be a group name, a list of them, a dict of TokenLayout.select criteria "
            f"or token indices; got {selection!r}."
        )
    return np.asarray(sel, dtype=np.int64)


def _nodes(graph, selection) -> np.ndarray:
    return graph.node_index(tokens(graph.layout, selection))


def _layer_positions(graph, layers: Sequence[int] | None) -> list[int]:
    return list(range(len(graph.layers))) if layers is None else [graph.layer_position(int(x)) for x in layers]


def mass(graph, query, key, *, layers: Sequence[int] | None = None, per_layer: bool = False):
    """Attention mass from ``query`` to ``key``: per query row the summed probability on the key
    tokens, averaged over query rows (and over ``layers`` unless ``per_layer``).

    Returns:
      float (fused heads), float [head] ("keep" graphs); with ``per_layer`` a leading [layer] axis.
    """
    q, k = _nodes(graph, query), _nodes(graph, key)
    pos = _layer_positions(graph, layers)
    att = graph.attention[pos]  # [L, (H,) n, n]
    vals = att[..., q, :][..., k].sum(axis=-1).mean(axis=-1).astype(np.float64)
    return vals if per_layer else vals.mean(axis=0)


def rollout_share(graph, query, key) -> float:
    """Share of the rollout (after the graph's last layer) of ``query`` that falls on ``key``
    (summed over key tokens, averaged over query rows)."""
    from flowlens.analysis.rollout import rollout

    r = rollout(graph, tokens(graph.layout, query), all_layers=False)
    k = _nodes(graph, key)
    return float(r.final[:, k].sum(axis=-1).mean())
