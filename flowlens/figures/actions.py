"""Action-to-action attention: horizon × horizon matrices of how action tokens read each other.

Pi0's action tokens attend to each other bidirectionally inside the action block; the matrix
``M[i, j]`` is the mass query action ``a_i`` puts on key action ``a_j`` (raw attention of a layer
and step, or a rollout restricted to the action block). Rows are queries, columns keys.

    ax = action_matrix(M [horizon, horizon])
    fig = action_matrix_grid(M [panel, horizon, horizon], panel_labels=["layer 0", ...])
    M = action_columns(rows [..., horizon, token], layout)   # the action columns of action rows
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError
from flowlens.figures._common import add_colorbar, get_ax, limits, new_figure


def action_columns(rows: np.ndarray, layout: TokenLayout) -> np.ndarray:
    """The action-key columns of action-query rows.

    Args:
      rows: float [..., horizon, token]: attention (or rollout) rows of the action tokens over the layout.
    Returns:
      float [..., horizon, horizon].
    """
    act = layout.actions
    if act is None:
        raise FlowlensError("this layout has no action tokens, so there is no action-to-action matrix.")
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim < 2 or rows.shape[-2:] != (act.size, layout.n):
        raise FlowlensError(
            f"rows must be [..., horizon={act.size}, token={layout.n}] (one row per action token), "
            f"got {rows.shape}."
        )
    return rows[..., act.start : act.stop]


def _check_matrix(m: np.ndarray, argument: str) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise FlowlensError(f"{argument} must be a square [horizon, horizon] matrix, got shape {m.shape}.")
    return m


def _ticks(ax, h: int) -> None:
    step = 1 if h <= 12 else 5 if h <= 60 else 10
    t = np.arange(0, h, step)
    ax.set_xticks(t)
    ax.set_yticks(t)
    ax.set_xticklabels([f"a{i}" for i in t], fontsize=9, rotation=90 if h > 12 else 0)
    ax.set_yticklabels([f"a{i}" for i in t], fontsize=9)


def action_matrix(
    matrix: np.ndarray,
    *,
    ax=None,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
    value_label: str = "attention mass",
    title: str | None = None,
    labels: bool = True,
):
    """A horizon × horizon action-to-action matrix (query rows, key columns).

    Args:
      matrix: float [horizon, horizon].
    Returns:
      The axes (``ax.images[0]``; tick labels "a0", "a5", …).
    """
    m = _check_matrix(matrix, "matrix")
    ax = get_ax(ax, figsize=(4.2, 3.6))
    lo, hi = limits(m, vmin, vmax)
    im = ax.imshow(m, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
    _ticks(ax, m.shape[0])
    if labels:
        ax.set_xlabel("key action (horizon index)")
        ax.set_ylabel("query action")
    if title is not None:
        ax.set_title(title, fontsize=10)
    if colorbar:
        add_colorbar(ax, im, value_label)
    return ax


def action_matrix_grid(
    matrices: np.ndarray,
    *,
    panel_labels: Sequence[str] | None = None,
    ncols: int | None = None,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    value_label: str = "attention mass",
    title: str | None = None,
    panel_size: float = 2.1,
):
    """Action matrices per layer or per denoising step, on one shared colour scale.

    Args:
      matrices: float [panel, horizon, horizon].
      panel_labels: a title per panel ("layer 3", "step 0 (t=1.0)").
      ncols: panels per row (default ≤ 6).
    Returns:
      The figure; its first ``panel`` axes are the matrices (the colorbar comes last).
    """
    mats = np.asarray(matrices, dtype=np.float64)
    if mats.ndim != 3 or mats.shape[1] != mats.shape[2]:
        raise FlowlensError(f"matrices must be [panel, horizon, horizon], got shape {mats.shape}.")
    n = mats.shape[0]
    if panel_labels is not None and len(panel_labels) != n:
        raise FlowlensError(f"panel_labels must give one label per matrix ({n}), got {len(panel_labels)}.")
    ncols = ncols or min(n, 6)
    nrows = int(np.ceil(n / ncols))
    lo, hi = limits(mats, vmin, vmax)
    fig = new_figure((ncols * panel_size + 1.0, nrows * panel_size + 0.8))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        action_matrix(
            mats[i],
            ax=ax,
            cmap=cmap,
            vmin=lo,
            vmax=hi,
            colorbar=False,
            labels=False,
            title=panel_labels[i] if panel_labels is not None else None,
        )
        ax.title.set_fontsize(9)
    for ax in axes[-1]:
        ax.set_xlabel("key action", fontsize=9)
    for ax in axes[:, 0]:
        ax.set_ylabel("query action", fontsize=9)
    add_colorbar(axes.flat[0], axes.flat[0].images[0], value_label, axes=axes.ravel().tolist())
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
