"""Per-frame measures for statistics: attention mass and rollout share between two token selections.

A thin layer over :mod:`flowlens.analysis.routing` (the one implementation of "mass between
selections" and of "rollout share"): a selection is anything ``flowlens.core.selection`` resolves
— a selection string ("words", "words:red | state", "patches:base_0_rgb[0:2,:]"), a ``Selection``,
a list of group names or token indices — or a dict of ``TokenLayout.select`` criteria
(``{"words": "red"}``, ``{"camera": "base_0_rgb"}``). Unknown names fail with a did-you-mean
``FlowlensError``. They read a ``TokenGraph`` (pure functions, no model).

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

from flowlens.analysis.routing import graph_mass, graph_rollout_mass
from flowlens.core.selection import resolve_tokens


def tokens(layout, selection) -> np.ndarray:
    """int64 [k] layout token indices of a selection (see the module docstring)."""
    if isinstance(selection, Mapping):
        return layout.select(**dict(selection))
    return resolve_tokens(layout, selection)


def _layer_positions(graph, layers: Sequence[int] | None) -> list[int]:
    return list(range(len(graph.layers))) if layers is None else [graph.layer_position(int(x)) for x in layers]


def mass(graph, query, key, *, layers: Sequence[int] | None = None, per_layer: bool = False):
    """Attention mass from ``query`` to ``key``: per query row the summed probability on the key
    tokens, averaged over query rows (and over ``layers`` unless ``per_layer``).

    Returns:
      float (fused heads), float [head] ("keep" graphs); with ``per_layer`` a leading [layer] axis.
    """
    vals = graph_mass(graph, tokens(graph.layout, query), tokens(graph.layout, key))[_layer_positions(graph, layers)]
    return vals if per_layer else vals.mean(axis=0)


def rollout_share(graph, query, key) -> float:
    """Share of the rollout (after the graph's last layer) of ``query`` that falls on ``key``
    (summed over key tokens, averaged over query rows)."""
    pair = (tokens(graph.layout, query), tokens(graph.layout, key))
    return float(graph_rollout_mass(graph, [pair])[-1, 0])
