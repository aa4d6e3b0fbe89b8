"""Head similarity (Jensen–Shannon) and head roles (clustering of group-mass profiles).

Two heads are similar when they spread their queries' attention over the keys alike. The
Jensen–Shannon divergence JS(p, q) = H((p + q)/2) − (H(p) + H(q))/2 (nats) is symmetric, zero
for identical distributions and at most ln 2; its square root is a metric (the JS distance).
``head_similarity`` compares every pair of the L·H heads, within and across layers, either on
the query-averaged distributions (default, one distribution per head) or per query and then
averaged over the queries (``per_query=True``: exact for "heads attend alike query by query",
L·H·L·H/2·q·k work).

A head's *role* is the share of its mass per role group: "sink" (BOS + "\\n"), "image:<camera>"
for each camera, "text" (prompt words), "state", "action". ``head_roles`` clusters those
profiles hierarchically (scipy, average linkage, total-variation distance) with a distance
threshold or a number of clusters, and names each cluster by its dominant role ("sink",
"image:base_0_rgb", ...; repeated names get the runner-up role appended).

MQA caveat (see ``flowlens.analysis.heads``): heads share K/V, and prefix and suffix queries
use different experts' projections — compare heads of the same query kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from flowlens.analysis.heads import HeadAttention, HeadStats, head_attention, head_stats
from flowlens.core.checks import check_choice, check_flag, real_number, whole_number
from flowlens.errors import FlowlensError, check_index, unknown_name_error

LN2 = float(np.log(2.0))
METRICS = ("divergence", "distance")


def _neg_entropy(x: np.ndarray) -> np.ndarray:
    """Σ x log x over the last axis (0·log 0 = 0)."""
    return np.einsum("...k,...k->...", x, np.log(x + x.dtype.type(1e-30)))


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence (nats) between distributions on the last axis (broadcasting).

    >>> float(js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0]))) == float(np.log(2))
    True
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = 0.5 * (p + q)
    js = 0.5 * (_neg_entropy(p) + _neg_entropy(q)) - _neg_entropy(m)
    return np.clip(js, 0.0, LN2)


def pairwise_js(dists: np.ndarray) -> np.ndarray:
    """JS divergence between every pair of distributions.

    Args:
      dists: float [item, ..., key]; middle axes (e.g. queries) are averaged over after the JS.
    Returns:
      float64 [item, item], symmetric, zero diagonal, in [0, ln 2]; computed in the dtype of
      ``dists`` (float32 input: ~1e-6 absolute error, 4× faster than float64).
    """
    d = np.asarray(dists)
    n = d.shape[0]
    neg = _neg_entropy(d)  # [item, ...]
    out = np.zeros((n, n))
    for i in range(n - 1):
        m = 0.5 * (d[i][None] + d[i + 1 :])
        js = 0.5 * (neg[i][None] + neg[i + 1 :]) - _neg_entropy(m)
        vals = js.reshape(js.shape[0], -1).astype(np.float64).mean(axis=1)
        out[i, i + 1 :] = vals
        out[i + 1 :, i] = vals
    return np.clip(out, 0.0, LN2)


@dataclasses.dataclass(frozen=True, eq=False)
class HeadSimilarity:
    """Pairwise Jensen–Shannon comparison of all layer × head pairs.

    Attributes:
      layers: model layer id of each layer; heads are ordered layer-major (index = l·H + h).
      num_heads: heads per layer.
      matrix: float64 [layer·head, layer·head]: JS divergence (nats, ≤ ln 2) or distance (≤ √ln 2).
      metric: "divergence" or "distance".
      per_query: True when JS was taken per query and averaged; False for query-averaged maps.
      step: denoising step.
    """

    layers: tuple[int, ...]
    num_heads: int
    matrix: np.ndarray
    metric: str
    per_query: bool
    step: int | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        """ "L<layer>H<head>" per row of ``matrix``."""
        return tuple(f"L{layer}H{h}" for layer in self.layers for h in range(self.num_heads))

    def _pos(self, layer: int) -> int:
        if layer < 0:
            return check_index("layer", layer, len(self.layers), "analysed layers")
        if layer not in self.layers:
            raise FlowlensError(f"layer {layer} was not analysed; analysed layers: {list(self.layers)}.")
        return self.layers.index(layer)

    def block(self, layer_a: int, layer_b: int) -> np.ndarray:
        """float64 [head, head]: heads of ``layer_a`` (rows) against heads of ``layer_b``."""
        h = self.num_heads
        a, b = self._pos(layer_a) * h, self._pos(layer_b) * h
        return self.matrix[a : a + h, b : b + h]

    def within_layer(self) -> np.ndarray:
        """float64 [layer, head, head]: the diagonal blocks."""
        h = self.num_heads
        return np.stack(
            [self.matrix[i * h : (i + 1) * h, i * h : (i + 1) * h] for i in range(len(self.layers))]
        )

    def layer_diversity(self) -> np.ndarray:
        """float64 [layer]: mean off-diagonal value within each layer (0 when heads agree)."""
        h = self.num_heads
        w = self.within_layer()
        return w.sum(axis=(1, 2)) / max(h * (h - 1), 1)


def head_similarity(
    source,
    *,
    step: int = 0,
    query=None,
    layers: Sequence[int] | None = None,
    metric: str = "divergence",
    per_query: bool = False,
    **select,
) -> HeadSimilarity:
    """Jensen–Shannon similarity of every pair of heads, within and across layers.

    Args:
      source: HeadStats (only with ``per_query=False``), HeadAttention, Capture or TokenGraph(heads="keep").
      step, query / **select, layers: as in ``head_stats``.
      metric: "divergence" (nats, ≤ ln 2) or "distance" (its square root, a metric).
      per_query: compare heads query by query and average (costlier) instead of comparing their
        query-averaged attention.
      JS is evaluated in float32 (absolute error ~1e-6; identical maps still give exactly 0).
    Returns:
      HeadSimilarity with matrix [layer·head, layer·head].
    """
    check_choice("metric", metric, METRICS)
    if check_flag("per_query", per_query):
        if isinstance(source, HeadStats):
            raise FlowlensError(
                "per_query=True needs the attention rows; pass the Capture, graph or HeadAttention."
            )
        ha: HeadAttention = head_attention(source, step=step, query=query, layers=layers, **select)
        rows = ha.probs.astype(np.float32)
        sums = rows.sum(axis=-1, keepdims=True)
        rows = rows / np.where(sums > 0, sums, 1)
        dists = rows.reshape((-1,) + rows.shape[2:])
        layer_ids, nh, stp = ha.layers, ha.num_heads, ha.step
    else:
        stats = (
            source
            if isinstance(source, HeadStats)
            else head_stats(source, step=step, query=query, layers=layers, **select)
        )
        dists = stats.key_mass.reshape(-1, stats.key_mass.shape[-1]).astype(np.float32)
        layer_ids, nh, stp = stats.layers, stats.num_heads, stats.step
    mat = pairwise_js(dists)
    if metric == "distance":
        mat = np.sqrt(mat)
    return HeadSimilarity(
        layers=tuple(layer_ids), num_heads=nh, matrix=mat, metric=metric, per_query=per_query, step=stp
    )


# ---- roles ----------------------------------------------------------------------------------
def role_profiles(stats: HeadStats) -> tuple[tuple[str, ...], np.ndarray]:
    """Group mass folded into roles.

    Returns:
      (role names, float64 [layer, head, role]): "sink" (bos + newline), "image:<camera>" per
      valid camera, "text" (words, eos), "state", "action"; roles absent from the layout are left out.
    """
    cams = [c.name for c in stats.layout.cameras]
    fold: dict[str, list[str]] = {
        "sink": [],
        **{f"image:{c}": [] for c in cams},
        "text": [],
        "state": [],
        "action": [],
    }
    for g in stats.groups:
        role = (
            "sink"
            if g in ("bos", "newline")
            else f"image:{g}"
            if g in cams
            else "text"
            if g in ("words", "eos")
            else "action"
            if g == "actions"
            else "state"
            if g == "state"
            else None
        )
        if role is None:
            raise FlowlensError(
                f"group {g!r} has no role; known groups: sinks, cameras, words, state, actions."
            )
        fold[role].append(g)
    names = tuple(r for r, gs in fold.items() if gs)
    prof = np.stack([sum(stats.group(g) for g in fold[r]) for r in names], axis=-1)
    return names, prof


@dataclasses.dataclass(frozen=True, eq=False)
class HeadRoles:
    """Heads clustered by the roles of their attention mass.

    Attributes:
      layers: model layer id of each layer.
      role_names: the role axis of ``profiles``.
      profiles: float64 [layer, head, role]: mass share per role (rows sum to 1).
      labels: int [layer, head]: cluster id of each head (0 = the largest cluster).
      cluster_names: name of each cluster, from its dominant role ("sink", "image:base_0_rgb", ...).
      centroids: float64 [cluster, role]: mean profile of each cluster.
    """

    layers: tuple[int, ...]
    role_names: tuple[str, ...]
    profiles: np.ndarray
    labels: np.ndarray
    cluster_names: tuple[str, ...]
    centroids: np.ndarray

    @property
    def names(self) -> np.ndarray:
        """str [layer, head]: the cluster name of each head."""
        return np.asarray(self.cluster_names, dtype=object)[self.labels]

    def members(self, name: str) -> list[tuple[int, int]]:
        """(layer, head) of every head in the cluster called ``name``."""
        if name not in self.cluster_names:
            raise unknown_name_error("name", name, self.cluster_names)
        c = self.cluster_names.index(name)
        return [(self.layers[i], int(h)) for i, h in zip(*np.nonzero(self.labels == c), strict=True)]


def head_roles(
    source,
    *,
    threshold: float | None = 0.25,
    k: int | None = None,
    method: str = "average",
    step: int = 0,
    query=None,
    **select,
) -> HeadRoles:
    """Cluster heads by their role profile (share of mass on sinks, each camera, text, state, actions).

    Args:
      source: HeadStats, or anything ``head_stats`` accepts (with step / query / **select).
      threshold: cut the dendrogram where clusters are farther apart than this total-variation
        distance (0..1) — ignored when ``k`` is given.
      k: number of clusters instead of a threshold.
      method: scipy linkage method ("average", "complete", "single", "weighted").
    Returns:
      HeadRoles with labels [layer, head] and named clusters.
    """
    from scipy.cluster import hierarchy

    stats = source if isinstance(source, HeadStats) else head_stats(source, step=step, query=query, **select)
    role_names, prof = role_profiles(stats)
    flat = prof.reshape(-1, len(role_names))
    n = flat.shape[0]
    check_choice("method", method, ("average", "complete", "single", "weighted"))
    if k is not None and whole_number("k", k) < 1:
        raise FlowlensError(f"k must be a positive number of clusters, got {k}.")
    if k is None and (threshold is None or not 0.0 <= real_number("threshold", threshold) <= 1.0):
        raise FlowlensError(
            f"threshold must be a total-variation distance in [0, 1] (or give k=), got {threshold}."
        )
    if n == 1:
        raw = np.ones(1, dtype=int)
    else:
        link = hierarchy.linkage(flat, method=method, metric="cityblock")
        if k is not None:
            raw = hierarchy.fcluster(link, t=min(int(k), n), criterion="maxclust")
        else:
            raw = hierarchy.fcluster(link, t=2.0 * threshold, criterion="distance")
    ids, counts = np.unique(raw, return_counts=True)
    first = np.array([np.flatnonzero(raw == i)[0] for i in ids])
    order = ids[np.lexsort((first, -counts))]  # largest first, then first appearance
    remap = {int(c): i for i, c in enumerate(order)}
    labels = np.array([remap[int(c)] for c in raw]).reshape(prof.shape[:2])
    centroids = np.stack([flat[labels.reshape(-1) == i].mean(axis=0) for i in range(len(order))])
    names: list[str] = []
    for c in centroids:
        rank = np.argsort(-c, kind="stable")
        name = role_names[rank[0]]
        if name in names and len(rank) > 1:
            name = f"{name}/{role_names[rank[1]]}"
        base, j = name, 2
        while name in names:
            name, j = f"{base}#{j}", j + 1
        names.append(name)
    return HeadRoles(
        layers=stats.layers,
        role_names=role_names,
        profiles=prof,
        labels=labels,
        cluster_names=tuple(names),
        centroids=centroids,
    )
