"""FigureConfig: the few choices every flowlens figure shares.

One frozen record carries what the legacy ``--viz-type`` scripts exposed as flags (which layers,
which heads, colormap, overlay alpha, output size) plus the labels a figure needs to say what it
shows (the query and the method), so every title reads e.g.
"rollout · query: action tokens · layer 17 · step 0 · heads: mean".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from flowlens.errors import FlowlensError, unknown_name_error

OVERLAY_TARGETS = ("frame", "model", "both")
CAMERA_SCALES = ("shared", "camera")
HEAD_SCALES = ("shared", "head")
# the figure types of one analysed frame (``--viz-type``); the first four are the legacy script's "all"
VIZ_TYPES = ("image", "text", "combined", "evolution", "steps", "heads", "actions")
LEGACY_VIZ_TYPES = VIZ_TYPES[:4]


@dataclasses.dataclass(frozen=True)
class FigureConfig:
    """Shared figure settings.

    Attributes:
      layers: model layer ids to draw (None = every layer in the scores given).
      heads: None = mean over heads, an int = that head, a tuple = mean over those heads. Only used
        when scores carry a head axis.
      cmap: sequential colormap for attention maps and word colours.
      diverging_cmap: colormap for differences (success − failure).
      alpha: heatmap opacity over the frame, in [0, 1].
      dpi: resolution of written PNGs.
      figsize: (width, height) in inches for the figure-level composers (None = sized to content).
      query: label of the query the scores belong to ("action tokens", "action a0", ...).
      method: label of the analysis ("raw attention", "rollout", "attention flow").
      value_label: what a score is, for colorbars and axes ("attention mass", "relevance").
      on: draw image heatmaps on the original "frame", on the "model" input (letterboxed,
        rotated as the model saw it), or "both".
      patch_grid: draw the patch grid over image heatmaps.
      smooth: bilinear heatmaps on frames (False = one flat block per patch).
      camera_scale: "shared" = one colour scale for every camera (compare cameras' mass), "camera" =
        each camera on its own scale (see where each camera looks; a camera holding 20 % of the
        mass is not drawn flat). The colorbars say which.
      head_scale: the per-head figure on one colour scale ("shared") or each head from 0 to its own
        maximum ("head", written under each panel), so heads with little mass stay visible.
    """

    layers: tuple[int, ...] | None = None
    heads: int | tuple[int, ...] | None = None
    cmap: str = "inferno"
    diverging_cmap: str = "RdBu_r"
    alpha: float = 0.55
    dpi: int = 150
    figsize: tuple[float, float] | None = None
    query: str = "action tokens"
    method: str = "attention"
    value_label: str = "attention mass"
    on: str = "frame"
    patch_grid: bool = False
    smooth: bool = True
    camera_scale: str = "shared"
    head_scale: str = "shared"

    def __post_init__(self) -> None:
        import matplotlib

        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(x) for x in np.atleast_1d(self.layers)))
        if isinstance(self.heads, Sequence) and not isinstance(self.heads, str):
            object.__setattr__(self, "heads", tuple(int(h) for h in self.heads))
        elif self.heads is not None and not isinstance(self.heads, (int, np.integer)):
            raise FlowlensError(
                f"FigureConfig.heads must be None (mean), an int or a tuple of ints, got {self.heads!r}."
            )
        for name in ("cmap", "diverging_cmap"):
            value = getattr(self, name)
            if value not in matplotlib.colormaps:
                raise unknown_name_error(f"FigureConfig.{name}", value, sorted(matplotlib.colormaps))
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise FlowlensError(f"FigureConfig.alpha must be in [0, 1] (overlay opacity), got {self.alpha}.")
        if int(self.dpi) <= 0:
            raise FlowlensError(f"FigureConfig.dpi must be a positive integer, got {self.dpi}.")
        if self.figsize is not None and (len(self.figsize) != 2 or min(self.figsize) <= 0):
            raise FlowlensError(
                f"FigureConfig.figsize must be (width, height) in inches > 0 or None, got {self.figsize!r}."
            )
        if self.on not in OVERLAY_TARGETS:
            raise unknown_name_error("FigureConfig.on", self.on, OVERLAY_TARGETS)
        if self.camera_scale not in CAMERA_SCALES:
            raise unknown_name_error("FigureConfig.camera_scale", self.camera_scale, CAMERA_SCALES)
        if self.head_scale not in HEAD_SCALES:
            raise unknown_name_error("FigureConfig.head_scale", self.head_scale, HEAD_SCALES)

    @property
    def heads_label(self) -> str:
        if self.heads is None:
            return "heads: mean"
        if isinstance(self.heads, tuple):
            return f"heads: mean of {list(self.heads)}"
        return f"head {int(self.heads)}"

    def title(
        self,
        *,
        layer: int | str | None = None,
        step: int | None = None,
        extra: str | None = None,
        heads: bool = True,
    ) -> str:
        """ "<method> · query: <query> · layer <l> · step <s> · heads: mean" (parts left out when None)."""
        parts = [self.method, f"query: {self.query}"]
        if layer is not None:
            parts.append(layer if isinstance(layer, str) else f"layer {int(layer)}")
        if step is not None:
            parts.append(f"step {int(step)}")
        if heads:
            parts.append(self.heads_label)
        if extra:
            parts.append(extra)
        return " · ".join(parts)
