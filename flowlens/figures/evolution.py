"""Group shares across layers (or denoising steps): where the query's mass goes, as stacked shares.

A *group* is one of ``TokenLayout.groups()``: each valid camera, the prompt words, the sink tokens
<bos> and "\\n", the state token, the action tokens. The share of a group is the summed score of
its tokens divided by the summed score of all valid tokens — sinks are groups of their own, never
dropped or renormalised away.

    names, shares = group_shares(scores [x, token], layout)        # shares [x, group]
    share_evolution(scores [layer, token], layout)                   # stacked area over layers
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError
from flowlens.figures._common import GROUP_LABELS, check_scores, get_ax, short_camera

KINDS = ("area", "bar", "line")

# Stable colours per group so that figures side by side agree.
_CAMERA_COLORS = ["#1f77b4", "#6baed6", "#9ecae1"]
_GROUP_COLORS = {
    "words": "#d62728",
    "bos": "#7f7f7f",
    "newline": "#bdbdbd",
    "eos": "#525252",
    "state": "#2ca02c",
    "actions": "#ff7f0e",
}


def group_label(name: str, layout: TokenLayout) -> str:
    if name in {c.name for c in layout.cameras}:
        return f"image: {short_camera(name)}"
    return GROUP_LABELS.get(name, name)


def group_colors(names: Sequence[str], layout: TokenLayout) -> list[str]:
    cams = [c.name for c in layout.cameras]
    return [
        _CAMERA_COLORS[cams.index(n) % len(_CAMERA_COLORS)] if n in cams else _GROUP_COLORS.get(n, "0.4")
        for n in names
    ]


def group_shares(scores: np.ndarray, layout: TokenLayout) -> tuple[list[str], np.ndarray]:
    """Share of each token group in the total score.

    Args:
      scores: float [..., token] (NaN at removed tokens, ignored).
    Returns:
      (names, shares [..., group]); shares sum to 1 over groups wherever the total is positive.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape[-1] != layout.n:
        raise FlowlensError(
            f"scores must have one value per token ({layout.n}) on the last axis, got {scores.shape}."
        )
    groups = layout.groups()
    names = list(groups)
    sums = np.stack([np.nansum(scores[..., idx], axis=-1) for idx in groups.values()], axis=-1)
    total = sums.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(total > 0, sums / np.where(total > 0, total, 1.0), 0.0)
    return names, shares


def share_evolution(
    scores: np.ndarray,
    layout: TokenLayout,
    *,
    x_values: Sequence[float | int] | None = None,
    xlabel: str = "layer",
    kind: str = "area",
    ax=None,
    title: str | None = None,
    legend: bool = True,
    drop_empty: bool = True,
):
    """Stacked shares of each token group along the first axis (layers or denoising steps).

    Args:
      scores: float [x, token] — e.g. [layer, token] for one query, or [step, token].
      x_values: x positions / labels (model layer ids, step indices); default 0..X-1.
      xlabel: x-axis label ("layer", "denoising step").
      kind: "area" (stacked area), "bar" (stacked bars) or "line" (one line per group).
      legend: put a legend (outside, right).
      drop_empty: leave out groups that get no mass anywhere (e.g. actions for a prefix query).
    Returns:
      The axes; y is the share in [0, 1]; legend entries are the group labels.
    """
    scores = check_scores(scores, layout, ("x", "token"))
    if kind not in KINDS:
        from flowlens.errors import unknown_name_error

        raise unknown_name_error("kind", kind, KINDS)
    names, shares = group_shares(scores, layout)
    if drop_empty:
        keep = shares.max(axis=0) > 0
        names = [n for n, k in zip(names, keep, strict=True) if k]
        shares = shares[:, keep]
    x = np.arange(scores.shape[0]) if x_values is None else np.asarray(list(x_values))
    if x.shape[0] != scores.shape[0]:
        raise FlowlensError(
            f"x_values must give one value per row of scores ({scores.shape[0]}), got {x.shape[0]}."
        )
    labels = [group_label(n, layout) for n in names]
    colors = group_colors(names, layout)
    ax = get_ax(ax, figsize=(6.5, 3.5))
    if kind == "area":
        ax.stackplot(x, shares.T, labels=labels, colors=colors, alpha=0.9)
        ax.set_xlim(x[0], x[-1]) if len(x) > 1 else None
    elif kind == "bar":
        bottom = np.zeros(len(x))
        for col, lab, c in zip(shares.T, labels, colors, strict=True):
            ax.bar(x, col, bottom=bottom, label=lab, color=c, width=0.85)
            bottom += col
    else:
        for col, lab, c in zip(shares.T, labels, colors, strict=True):
            ax.plot(x, col, label=lab, color=c, marker="o", ms=3)
    ax.set_ylim(0, 1 if kind != "line" else max(1e-3, float(shares.max()) * 1.1))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of total mass")
    if len(x) <= 20:
        ax.set_xticks(x)
    ax.spines[["top", "right"]].set_visible(False)
    if title is not None:
        ax.set_title(title, fontsize=10)
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return ax
