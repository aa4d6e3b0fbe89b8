"""Figure-level composers of one analysed frame: the steps, heads and actions views, and the
success-vs-failure page — arrays in, one figure out (``flowlens.pipeline.render`` maps the
``--viz-type`` names to these and to ``composers``; nothing here calls JAX).

    steps_figure(scores [step, token], layout, images, layer=17, times=..., config=...)  # step 0 + changes
    heads_figure(scores [layer, head, token], layout, images, layer_ids=..., layers=..., ...)
    actions_figure(rows [layer, horizon, token], layout, layer_ids=..., layers=..., ...)
    outcome_figure(success [token], failure [token], layouts, images, ...)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError
from flowlens.figures._common import new_figure
from flowlens.figures.actions import action_columns, action_matrix_grid
from flowlens.figures.compare import compare_outcomes
from flowlens.figures.config import FigureConfig
from flowlens.figures.heads import head_grid
from flowlens.figures.steps import step_labels, step_share_evolution
from flowlens.figures.strips import map_panels
from flowlens.projection import camera_segment, patch_grid

MAX_HEAD_LAYERS = 6  # layers × 8 heads panels: more than 6 rows is unreadable


def first_camera(layout: TokenLayout, images: Mapping[str, np.ndarray] | None = None):
    """(name, frame or None) of the first valid camera (the first camera when none is valid)."""
    cams = [c for c in layout.cameras if c.valid] or list(layout.cameras)
    return cams[0].name, (images or {}).get(cams[0].name)


def _step_text(step: int | str) -> str:
    """ "step 3" for a step index; a label ("mean of 10 denoising steps", "step 0 (t=1.00)") as given."""
    return f"step {int(step)}" if isinstance(step, (int, np.integer)) else str(step)


def _rows_of(layer_ids: Sequence[int], layers: Sequence[int]) -> list[int]:
    missing = [x for x in layers if x not in layer_ids]
    if missing:
        raise FlowlensError(f"layer {missing[0]} is not among the scores' layers {list(layer_ids)}.")
    return [list(layer_ids).index(x) for x in layers]


def step_change(scores: np.ndarray) -> tuple[float, float]:
    """(largest |score − step 0| over steps and entries, largest |score|) of float [step, ...]."""
    scores = np.asarray(scores, dtype=np.float64)
    change = float(np.nanmax(np.abs(scores - scores[:1]))) if scores.shape[0] > 1 else 0.0
    return change, float(np.nanmax(np.abs(scores)))


def steps_figure(
    scores: np.ndarray,
    layout: TokenLayout,
    images: Mapping[str, np.ndarray] | None = None,
    *,
    layer: int,
    times: Sequence[float | None] | None = None,
    config: FigureConfig | None = None,
):
    """What changes over the denoising steps at one layer: step 0's map, then each later step's
    difference from step 0 (diverging colormap, centred at 0), and the group shares per step.

    The figure states the largest change against the largest value, and says when the maps are
    constant across steps (within 1 % of the largest value: rollout at late layers often is), so
    ten identical panels are never shown as if they differed.

    Args:
      scores: float [step, token] at model layer ``layer``, two steps or more.
      times: flow-matching time of each step (for the panel titles).
    Returns:
      The figure: step 0 and the difference panels on top, the share-per-group chart below.
    """
    config = config or FigureConfig()
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] < 2:
        raise FlowlensError("the steps figure needs the scores at every denoising step; run with --step all.")
    camera, image = first_camera(layout, images)
    n = scores.shape[0]
    labels = step_labels(n, times or None)
    change, top_value = step_change(patch_grid(scores, layout, camera))  # on the camera drawn
    share = change / top_value if top_value > 0 else 0.0
    all_change, all_top = step_change(scores[:, layout.valid])
    ncols = min(n - 1, 5)
    nrows = int(np.ceil((n - 1) / ncols))
    fig = new_figure((14.0, 3.0 + 2.2 * nrows))
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.2 * nrows, 1.0])
    left, right = top.subfigures(1, 2, width_ratios=[1.0, ncols + 0.4])
    common = dict(layout=layout, camera=camera, image=image, on="frame", smooth=config.smooth)
    map_panels(
        scores[:1],
        nrows=1,
        ncols=1,
        titles=[labels[0]],
        cmap=config.cmap,
        alpha=config.alpha,
        value_label=config.value_label,
        fig=left,
        **common,
    )
    map_panels(
        scores[1:] - scores[:1],
        nrows=nrows,
        ncols=ncols,
        titles=[f"{lab} − step 0" for lab in labels[1:]],
        cmap=config.diverging_cmap,
        vmin=-change if change > 0 else -1e-12,
        vmax=change if change > 0 else 1e-12,
        alpha=0.85,
        value_label=f"change from step 0 ({config.value_label})",
        fig=right,
        **common,
    )
    verdict = (
        "constant across steps: within 1 % of step 0 (the panels show only that residue)"
        if share < 0.01
        else "it changes across steps"
    )
    top.suptitle(
        f"{camera}: largest change from step 0 {change:.2g} = {100 * share:.1f} % of its largest value "
        f"{top_value:.2g} · {verdict}\nall tokens: largest change {all_change:.2g} against largest value "
        f"{all_top:.2g}",
        fontsize=9,
    )
    step_share_evolution(scores, layout, ax=bottom.subplots(), title="share per token group at each denoising step")
    fig.suptitle(
        config.title(layer=layer, extra="across denoising steps (step 0: t = 1.0, pure noise)"), fontsize=10
    )
    return fig


def heads_figure(
    scores: np.ndarray,
    layout: TokenLayout,
    images: Mapping[str, np.ndarray] | None = None,
    *,
    layer_ids: Sequence[int],
    layers: Sequence[int],
    query_label: str,
    step: int | str,
    config: FigureConfig | None = None,
    cameras: Sequence[str] | None = None,
):
    """Layers × heads raw attention of one query (at most 6 of ``layers``, evenly spread), one
    block per camera; ``config.head_scale`` = "head" puts each panel on its own scale.

    Args:
      scores: float [layer, head, token]; ``layer_ids`` names its layer axis, ``layers`` the ones to draw.
      cameras: camera names, one block each (default: the first valid camera).
    """
    config = config or FigureConfig()
    layers = list(layers)
    if len(layers) > MAX_HEAD_LAYERS:
        layers = [layers[int(round(i))] for i in np.linspace(0, len(layers) - 1, MAX_HEAD_LAYERS)]
    cams = [camera_segment(layout, c) for c in (cameras or [first_camera(layout)[0]])]
    rows = np.asarray(scores)[_rows_of(layer_ids, layers)]
    title = (
        f"raw attention per head · query: {query_label} · {_step_text(step)} · "
        "8 query heads share one key/value head (MQA)"
        + (" · each panel on its own scale" if config.head_scale == "head" else "")
    )
    num_heads = rows.shape[1]
    panel = 1.25
    fig = new_figure((num_heads * panel + 1.6, len(cams) * (len(layers) * panel + 0.5) + 0.6))
    subs = np.atleast_1d(fig.subfigures(len(cams), 1))
    for sub, cam in zip(subs, cams, strict=True):
        head_grid(
            rows,
            layout,
            camera=cam.name,
            image=(images or {}).get(cam.name),
            layer_ids=layers,
            title=f"camera: {cam.name}",
            on="frame",
            cmap=config.cmap,
            alpha=config.alpha,
            smooth=config.smooth,
            scale="panel" if config.head_scale == "head" else "shared",
            fig=sub,
        )
    fig.suptitle(title, fontsize=10)
    return fig


def actions_figure(
    rows: np.ndarray,
    layout: TokenLayout,
    *,
    layer_ids: Sequence[int],
    layers: Sequence[int],
    step: int | str,
    heads_label: str,
):
    """Action → action raw attention, one horizon × horizon panel per layer of ``layers``.

    Args:
      rows: float [layer, horizon, token] rows of the action tokens; ``layer_ids`` names its layer axis.
    """
    layers = list(layers)
    picked = np.asarray(rows, dtype=np.float64)[_rows_of(layer_ids, layers)]
    mats = action_columns(picked, layout)
    fig = action_matrix_grid(
        mats,
        panel_labels=[f"layer {x}" for x in layers],
        title=f"action → action raw attention · {_step_text(step)} · {heads_label}\n"
        "under each panel: the share of the action tokens' attention that goes to the prefix (images "
        "and words, not drawn here)",
    )
    for ax, share in zip([ax for ax in fig.axes if ax.images], prefix_share(picked, layout), strict=True):
        ax.set_xlabel(f"key action\n{100 * share:.0f} % to the prefix", fontsize=9)
    return fig


def prefix_share(rows: np.ndarray, layout: TokenLayout) -> np.ndarray:
    """float [layer]: the share of the action rows' attention mass on prefix tokens (images, prompt),
    averaged over the query actions. ``rows``: float [layer, horizon, token] (NaN = removed key)."""
    rows = np.nan_to_num(np.asarray(rows, dtype=np.float64))
    total = rows.sum(axis=-1)
    on_prefix = rows[..., : layout.prefix_len].sum(axis=-1)
    return np.mean(on_prefix / np.where(total > 0, total, 1.0), axis=-1)


def outcome_figure(
    success: np.ndarray,
    failure: np.ndarray,
    layouts: tuple[TokenLayout, TokenLayout],
    images: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
    *,
    frame_index: int,
    value_label: str,
    title: str,
    smooth: bool = True,
):
    """Success vs failure at one frame index, one row per camera valid in both runs
    (``compare_outcomes``; the cameras either run lacks are named under the figure).

    Args:
      success, failure: float [token] scores of each episode's frame; layouts and images
        ({camera: uint8 [H, W, 3]}) in that order.
    """
    return compare_outcomes(
        success,
        failure,
        layouts[0],
        failure_layout=layouts[1],
        images=images,
        camera=None,
        frame_index=frame_index,
        value_label=value_label,
        title=title,
        smooth=smooth,
    )


