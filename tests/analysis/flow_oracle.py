"""Reference construction of attention flow (Abnar & Zuidema 2020) in networkx: the test oracle.

Nodes (layer, token) for layers 0..L; edge (i+1, f) -> (i, t) with capacity C[i, f, t] (> 0 only);
value(q, j) = max-flow from (L, q) to (0, j). A source *set* S gets a super-sink joined to every
(0, j), j in S, by an edge without a capacity attribute (infinite in networkx).
"""

from __future__ import annotations

import networkx as nx
import numpy as np


def build_graph(C: np.ndarray) -> nx.DiGraph:
    L, n, _ = C.shape
    g = nx.DiGraph()
    g.add_nodes_from((i, t) for i in range(L + 1) for t in range(n))
    for i in range(L):
        fs, ts = np.nonzero(C[i] > 0)
        for f, t in zip(fs.tolist(), ts.tolist(), strict=True):
            g.add_edge((i + 1, f), (i, t), capacity=float(C[i, f, t]))
    return g


def oracle_flow(C: np.ndarray, q: int, j: int, *, layer: int = 0) -> float:
    """Max-flow from (L, q) to (layer, j)."""
    g = build_graph(C)
    return float(nx.maximum_flow_value(g, (C.shape[0], q), (layer, j)))


def oracle_set_flow(C: np.ndarray, q: int, sources) -> float:
    g = build_graph(C)
    for j in sources:
        g.add_edge((0, int(j)), "SINK")
    return float(nx.maximum_flow_value(g, (C.shape[0], q), "SINK"))


def oracle_matrix(C: np.ndarray, queries, sources=None, *, layer: int = 0) -> np.ndarray:
    g = build_graph(C)
    n = C.shape[1]
    sources = range(n) if sources is None else sources
    out = np.zeros((len(queries), len(list(sources))))
    for a, q in enumerate(queries):
        for b, j in enumerate(sources):
            out[a, b] = nx.maximum_flow_value(g, (C.shape[0], int(q)), (layer, int(j)))
    return out
