"""Thin adapters from analysis results to figures (duck-typed: only the documented fields are read).

The figure functions take plain arrays; these helpers unpack the analysis records of
``flowlens.analysis`` (Rollout, StepRollout, HeadStats, ActionAttention) into them and word the
titles, so a typical call is one line:

    fig = rollout_strip(rollout_result, camera=0, image=frame)
    fig = head_stats_grid(stats, camera=0, image=frame)
    fig = action_attention_grid(action_attention_result)
    fig = step_rollout_strip(step_rollout_result, image=frame)
"""

from __future__ import annotations

import numpy as np

from flowlens.figures.actions import action_matrix_grid
from flowlens.figures.heads import head_grid
from flowlens.figures.steps import step_strip
from flowlens.figures.strips import layer_strip


def rollout_strip(
    result,
    *,
    camera: str | int = 0,
    image: np.ndarray | None = None,
    query: str = "action tokens",
    reduce: str = "mean",
    **kwargs,
):
    """``layer_strip`` of a ``flowlens.analysis.Rollout``: rollout after every layer, queries by ``reduce``."""
    scores = np.stack([result.token_scores(layer, reduce=reduce) for layer in result.layers])
    graph = result.graph
    step = f" · step {graph.step}" if getattr(graph, "step", None) is not None else ""
    title = kwargs.pop("title", None) or f"rollout · query: {query}{step} · heads: {graph.heads}"
    return layer_strip(
        scores,
        graph.layout,
        camera=camera,
        image=image,
        layer_ids=result.layers,
        title=title,
        value_label="rollout relevance",
        **kwargs,
    )


def step_rollout_strip(
    result,
    *,
    camera: str | int = 0,
    image: np.ndarray | None = None,
    layer: int = -1,
    query: str = "action tokens",
    **kwargs,
):
    """``step_strip`` of a ``StepRollout``: the rollout after ``layer`` (default last) at every step."""
    pos = layer if layer < 0 else result.layers.index(layer)
    scores = np.asarray(result.values[:, pos], dtype=np.float64).mean(axis=1)  # [step, token]
    scores[:, ~result.layout.valid] = np.nan
    title = kwargs.pop("title", None) or (
        f"rollout · query: {query} · after layer {result.layers[pos]} · heads: {result.heads}"
    )
    return step_strip(
        scores,
        result.layout,
        camera=camera,
        image=image,
        times=list(result.times),
        title=title,
        value_label="rollout relevance",
        **kwargs,
    )


def head_stats_grid(
    stats, *, camera: str | int = 0, image: np.ndarray | None = None, query: str = "action tokens", **kwargs
):
    """``head_grid`` of a ``HeadStats`` (mean over the queries of each head's attention)."""
    step = f" · step {stats.step}" if stats.step is not None else ""
    title = kwargs.pop("title", None) or f"raw attention per head · query: {query}{step}"
    return head_grid(
        stats.token_mass(),
        stats.layout,
        camera=camera,
        image=image,
        layer_ids=stats.layers,
        title=title,
        **kwargs,
    )


def action_attention_grid(attn, *, head: int | str = "mean", **kwargs):
    """``action_matrix_grid`` of an ``ActionAttention``: one horizon × horizon panel per layer."""
    values = np.asarray(attn.values, dtype=np.float64)  # [layer, head, h, h]
    if head == "mean":
        mats, heads = values.mean(axis=1), "mean over heads" if values.shape[1] > 1 else attn.heads[0]
    else:
        mats, heads = values[:, int(head)], attn.heads[int(head)]
    step = f" · step {attn.step}" if attn.step is not None else ""
    title = kwargs.pop("title", None) or f"action → action ({attn.kind}){step} · {heads}"
    return action_matrix_grid(
        mats, panel_labels=[f"layer {layer}" for layer in attn.layers], title=title, **kwargs
    )
