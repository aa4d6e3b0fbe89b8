"""Denoising-step evolution: how the action tokens' attention changes over the flow-matching steps.

Suffix attention is recomputed at every denoising step (t = 1.0 → 0.1 for 10 steps), so where the
actions look can drift from the noise-dominated first step to the last. Never mix steps silently:
these figures put the step (and its time t) on the axis or in the panel title.

    ax = step_share_evolution(scores [step, token], layout, times=capture.times)
    fig = step_strip(scores [step, token], layout, camera=0, image=frame, times=capture.times)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError
from flowlens.figures._common import check_scores
from flowlens.figures.evolution import share_evolution
from flowlens.figures.strips import map_panels


def step_labels(count: int, times: Sequence[float | None] | None = None) -> list[str]:
    """ "step 0 (t=1.00)" … (time left out when unknown)."""
    if times is not None and len(times) != count:
        raise FlowlensError(f"times must give one flow time per step ({count}), got {len(times)}.")
    return [
        f"step {s}" + (f" (t={times[s]:.2f})" if times is not None and times[s] is not None else "")
        for s in range(count)
    ]


def step_share_evolution(
    scores: np.ndarray,
    layout: TokenLayout,
    *,
    times: Sequence[float | None] | None = None,
    kind: str = "bar",
    ax=None,
    title: str | None = None,
):
    """Stacked group shares per denoising step (x = step; tick labels carry t when given).

    Args:
      scores: float [step, token] (one layer, or a rollout, of the chosen query at each step).
      times: flow-matching time of each step (``capture.times``).
      kind: "bar" (default), "area" or "line".
    Returns:
      The axes.
    """
    scores = check_scores(scores, layout, ("step", "token"))
    ax = share_evolution(scores, layout, xlabel="denoising step", kind=kind, ax=ax, title=title)
    if times is not None:
        ax.set_xticks(np.arange(scores.shape[0]))
        ax.set_xticklabels(
            [f"{s}\nt={t:.1f}" if t is not None else str(s) for s, t in enumerate(times)], fontsize=7
        )
    return ax


def step_strip(
    scores: np.ndarray,
    layout: TokenLayout,
    *,
    camera: str | int = 0,
    image: np.ndarray | None = None,
    times: Sequence[float | None] | None = None,
    ncols: int | None = None,
    title: str | None = None,
    **kwargs,
):
    """One camera's heatmap per denoising step on a shared colour scale.

    Args:
      scores: float [step, token].
      times: flow time per step (panel titles "step s (t=…)").
      **kwargs: passed to ``map_panels`` (on, cmap, alpha, vmin, vmax, value_label, panel_size).
    Returns:
      The figure (one axes per step, then the colorbar).
    """
    scores = check_scores(scores, layout, ("step", "token"))
    n = scores.shape[0]
    ncols = ncols or min(n, 5)
    fig, _ = map_panels(
        scores,
        layout,
        camera=camera,
        image=image,
        nrows=int(np.ceil(n / ncols)),
        ncols=ncols,
        titles=step_labels(n, times),
        suptitle=title,
        **kwargs,
    )
    return fig
