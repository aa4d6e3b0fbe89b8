"""Layers × heads comparison grids: every head's image heatmap or word bars, on a shared scale.

A grid is the data a figure of L rows × H columns of small panels needs: per panel a camera's
patch heatmap ``[rows, cols]`` (or the prompt's word masses ``[word]``), for one query selection
and step, plus the colour limits — over the whole grid (``scale="grid"``, panels comparable
everywhere) or per layer (``scale="layer"``, heads comparable within a row). Values are the mean
over the selected queries of each head's attention mass (see ``flowlens.analysis.heads``);
``normalize=True`` rescales each image panel to sum to 1 over its camera (where in the image the
head looks, regardless of how much it looks at the image). The BOS / "\\n" sink mass of word grids
is kept apart in ``specials`` and does not enter the word colour scale.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from flowlens.analysis.heads import HeadStats, head_stats
from flowlens.core.checks import check_flag
from flowlens.errors import FlowlensError, unknown_name_error
from flowlens.core.patches import camera_segment

SCALES = ("grid", "layer")


@dataclasses.dataclass(frozen=True, eq=False)
class HeadGrid:
    """Layers × heads panels with shared colour limits.

    Attributes:
      kind: "image" (values [layer, head, rows, cols]) or "words" (values [layer, head, word]).
      name: the camera name, or "words".
      values: float64 panel data; NaN never appears for valid cameras and words.
      layers: model layer id of each grid row.
      item_labels: word strings for a word grid; () for an image grid.
      specials: words grid: {"bos": [layer, head], "newline": [layer, head]} sink masses; {} for images.
      scale: which limits ``limits`` returns: "grid" or "layer".
      vmin, vmax: limits over the whole grid.
      layer_vmin, layer_vmax: float64 [layer]: limits per layer (grid row).
      normalized: image panels were rescaled to sum to 1 over the camera.
      query_tokens: int64 [query] layout indices of the queries the values average over.
      step: denoising step (None: not from a suffix pass).
    """

    kind: str
    name: str
    values: np.ndarray
    layers: tuple[int, ...]
    item_labels: tuple[str, ...]
    specials: dict
    scale: str
    vmin: float
    vmax: float
    layer_vmin: np.ndarray
    layer_vmax: np.ndarray
    normalized: bool
    query_tokens: np.ndarray
    step: int | None = None

    @property
    def num_heads(self) -> int:
        return self.values.shape[1]

    @property
    def row_labels(self) -> tuple[str, ...]:
        return tuple(f"layer {x}" for x in self.layers)

    @property
    def col_labels(self) -> tuple[str, ...]:
        return tuple(f"head {h}" for h in range(self.num_heads))

    def limits(self, layer_pos: int | None = None) -> tuple[float, float]:
        """(vmin, vmax) of grid row ``layer_pos`` under this grid's scale (the whole grid's when None)."""
        if self.scale == "grid" or layer_pos is None:
            return self.vmin, self.vmax
        return float(self.layer_vmin[layer_pos]), float(self.layer_vmax[layer_pos])


def _limits(values: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
    per_layer = values.reshape(values.shape[0], -1)
    return (
        float(np.nanmin(values)),
        float(np.nanmax(values)),
        np.nanmin(per_layer, axis=1),
        np.nanmax(per_layer, axis=1),
    )


def _stats(source, step, query, layers, select) -> HeadStats:
    if isinstance(source, HeadStats):
        if query is not None or select or layers is not None:
            raise FlowlensError("source is already HeadStats; choose queries/layers when computing it.")
        return source
    return head_stats(source, step=step, query=query, layers=layers, **select)


def _check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise unknown_name_error("scale", scale, SCALES)


def head_image_grid(
    source,
    camera: str | int = 0,
    *,
    scale: str = "grid",
    normalize: bool = False,
    step: int = 0,
    query=None,
    layers: Sequence[int] | None = None,
    **select,
) -> HeadGrid:
    """Every head's heatmap on one camera.

    Args:
      source: HeadStats (reused), or a Capture / TokenGraph(heads="keep") / HeadAttention.
      camera: camera name or index (must be a valid, unmasked camera).
      scale: "grid" (one colour scale for all panels) or "layer" (one per layer row).
      normalize: rescale each panel to sum to 1 over the camera.
      step, query / **select, layers: as in ``head_stats`` (default: action queries, step 0).
    Returns:
      HeadGrid with values float64 [layer, head, rows, cols].
    """
    _check_scale(scale)
    stats = _stats(source, step, query, layers, select)
    seg = camera_segment(stats.layout, camera)
    if not seg.valid:
        valid = [c.name for c in stats.layout.cameras if c.valid]
        raise FlowlensError(
            f"camera {seg.name!r} is masked in this layout, so it has no heatmap; valid cameras: {valid}."
        )
    values = stats.heatmap(seg.name)
    if check_flag("normalize", normalize):
        total = values.sum(axis=(-2, -1), keepdims=True)
        values = values / np.where(total > 0, total, 1.0)
    vmin, vmax, lmin, lmax = _limits(values)
    return HeadGrid(
        kind="image",
        name=seg.name,
        values=values,
        layers=stats.layers,
        item_labels=(),
        specials={},
        scale=scale,
        vmin=vmin,
        vmax=vmax,
        layer_vmin=lmin,
        layer_vmax=lmax,
        normalized=normalize,
        query_tokens=stats.query_tokens,
        step=stats.step,
    )


def head_word_grid(
    source, *, scale: str = "grid", step: int = 0, query=None, layers: Sequence[int] | None = None, **select
) -> HeadGrid:
    """Every head's mass per prompt word (sub-word pieces merged), sinks reported apart.

    Args:
      source, scale, step, query / **select, layers: as in ``head_image_grid``.
    Returns:
      HeadGrid with values float64 [layer, head, word] and specials {"bos"/"newline": [layer, head]}.
    """
    _check_scale(scale)
    stats = _stats(source, step, query, layers, select)
    text = stats.layout.text
    if text is None or not text.words:
        raise FlowlensError("this layout has no prompt words; a word grid needs a text segment with words.")
    tok = stats.token_mass()[..., text.start : text.stop]  # [layer, head, text token]
    word_of = np.asarray(text.word_of_token)
    onehot = np.zeros((text.size, len(text.words)))
    hits = np.flatnonzero(word_of >= 0)
    onehot[hits, word_of[hits]] = 1.0
    values = np.nan_to_num(tok) @ onehot
    roles = np.asarray(text.roles)
    specials = {
        role: np.nan_to_num(tok[..., roles == role]).sum(axis=-1)
        for role in ("bos", "newline", "eos")
        if (roles == role).any()
    }
    vmin, vmax, lmin, lmax = _limits(values)
    return HeadGrid(
        kind="words",
        name="words",
        values=values,
        layers=stats.layers,
        item_labels=tuple(text.words),
        specials=specials,
        scale=scale,
        vmin=vmin,
        vmax=vmax,
        layer_vmin=lmin,
        layer_vmax=lmax,
        normalized=False,
        query_tokens=stats.query_tokens,
        step=stats.step,
    )


def head_grids(
    source,
    *,
    scale: str = "grid",
    normalize: bool = False,
    step: int = 0,
    query=None,
    layers: Sequence[int] | None = None,
    **select,
) -> dict[str, HeadGrid]:
    """The image grid of every valid camera and the word grid, from one statistics pass.

    Returns:
      {camera name: HeadGrid (image), ..., "words": HeadGrid (words, when the prompt has words)}.
    """
    stats = _stats(source, step, query, layers, select)
    out = {
        c.name: head_image_grid(stats, c.name, scale=scale, normalize=normalize)
        for c in stats.layout.cameras
        if c.valid
    }
    text = stats.layout.text
    if text is not None and text.words:
        out["words"] = head_word_grid(stats, scale=scale)
    return out
