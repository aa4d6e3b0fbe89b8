"""CaptureConfig: which attention probabilities an inference records.

A Pi0 / Pi0.5 inference makes one prefix pass and ``num_steps`` suffix passes (one per
denoising step), each over every layer. Recording all of it in float32 costs
``layers·heads·P²`` floats for the prefix (383 MB for Pi0 LIBERO) plus ``layers·heads·T_s·n`` per
step (25 MB); an episode has hundreds of frames. A CaptureConfig picks what to keep *inside* the
compiled computation, so what is not asked for never leaves the device:

- ``layers``: model layers (default all),
- ``prefix`` / ``steps``: the prefix pass, and which denoising steps ("all", "none", or indices),
- ``query_rows``: which query tokens: "all", "valid", "prefix", "suffix", "actions", group names of
  ``TokenLayout.groups()`` (cameras, "bos", "words", "newline", "state", "actions"), or absolute
  token indices; each pass keeps the chosen rows that it has (a pass with none is not recorded),
- ``heads``: None keeps all heads; "mean" / "max" / "min" fuses them at capture time (one head,
  ``AttentionPass.head_reduction`` says which),
- ``batch_index``: the batch element recorded.

Example::

    CaptureConfig(layers=range(9, 18), steps=(0, 9), query_rows="actions", heads="mean")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from flowlens.core.capture import HEAD_REDUCTIONS
from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError, unknown_name_error

ROW_KEYWORDS = ("all", "valid", "prefix", "suffix")


@dataclasses.dataclass(frozen=True)
class CaptureConfig:
    """What to record during ``sample_actions`` / ``forward`` (frozen, hashable).

    Attributes:
      layers: model layers to record, None for all.
      prefix: record the prefix pass (sample_actions).
      steps: denoising steps to record: "all", "none", or step indices (0 is t = 1.0).
      query_rows: "all", "valid", "prefix", "suffix", a group name or names ("actions", "state",
        a camera, "words", "bos", "newline"), or absolute token indices.
      heads: None (every head) or a head fusion "mean" / "max" / "min".
      batch_index: batch element to record.
      full: record the full pass of ``forward`` (training-style, PassKind.FULL).
      image_norms: put per-patch L2 norms of the SigLIP output tokens (sink diagnostics) into
        ``capture.metadata["image_token_norms"]`` (camera → list of floats, row-major patches).
      residual: also record the residual stream of every recorded pass of ``sample_actions``
        (``AttentionPass.residual``, float32 [layers + 1, tokens of the pass, width]: every token,
        whatever ``query_rows`` says) — what value-based attributions (norm, ALTI, value zeroing)
        and activation patching read. Suffix passes need the prefix pass recorded too (their keys'
        values come from it). Costs ``(L+1)·P·D0`` floats for the prefix (Pi0: 127 MB) and
        ``(L+1)·S·D1`` per step (4 MB).
    """

    layers: tuple[int, ...] | None = None
    prefix: bool = True
    steps: str | tuple[int, ...] = "all"
    query_rows: str | tuple[str, ...] | tuple[int, ...] = "all"
    heads: str | None = None
    batch_index: int = 0
    full: bool = True
    image_norms: bool = True
    residual: bool = False

    def __post_init__(self) -> None:
        if self.layers is not None:
            layers = tuple(sorted({int(x) for x in self.layers}))
            if not layers:
                raise FlowlensError("CaptureConfig.layers is empty; pass None (all layers) or layer ids.")
            object.__setattr__(self, "layers", layers)
        steps = self.steps
        if isinstance(steps, str):
            if steps not in ("all", "none"):
                raise unknown_name_error("steps", steps, ["all", "none"])
        else:
            steps = tuple(sorted({int(s) for s in steps}))
            object.__setattr__(self, "steps", steps)
        rows = self.query_rows
        if not isinstance(rows, str):
            rows = tuple(rows if not isinstance(rows, np.ndarray) else rows.tolist())
            if rows and all(isinstance(r, str) for r in rows):
                pass
            elif all(isinstance(r, (int, np.integer)) and not isinstance(r, bool) for r in rows):
                rows = tuple(sorted({int(r) for r in rows}))
            else:
                raise FlowlensError(
                    f"CaptureConfig.query_rows must be a keyword, group names or token indices, got {rows!r}."
                )
            object.__setattr__(self, "query_rows", rows)
        if self.heads is not None and self.heads not in HEAD_REDUCTIONS:
            raise unknown_name_error("heads", self.heads, list(HEAD_REDUCTIONS))
        if self.batch_index < 0:
            raise FlowlensError(f"CaptureConfig.batch_index must be >= 0, got {self.batch_index}.")

    @classmethod
    def actions_only(cls, **kwargs) -> CaptureConfig:
        """Only the action query rows of every denoising step (no prefix pass): the cheapest
        capture for action-centred analyses."""
        return cls(prefix=False, query_rows="actions", **kwargs)

    # ---- resolution against a model and a layout ------------------------------------------------
    def resolve_layers(self, num_layers: int) -> tuple[int, ...]:
        layers = tuple(range(num_layers)) if self.layers is None else self.layers
        bad = [x for x in layers if not 0 <= x < num_layers]
        if bad:
            raise FlowlensError(
                f"CaptureConfig.layers contains layer {bad[0]}, but the model has {num_layers} layers "
                f"(0–{num_layers - 1})."
            )
        return layers

    def resolve_steps(self, num_steps: int) -> tuple[int, ...]:
        if self.steps == "all":
            return tuple(range(num_steps))
        if self.steps == "none":
            return ()
        bad = [s for s in self.steps if not -num_steps <= s < num_steps]
        if bad:
            raise FlowlensError(
                f"CaptureConfig.steps contains step {bad[0]}, but sampling runs {num_steps} steps "
                f"(0–{num_steps - 1})."
            )
        return tuple(sorted({s % num_steps for s in self.steps}))

    def resolve_rows(self, layout: TokenLayout) -> np.ndarray:
        """Absolute token indices (sorted int64) selected by ``query_rows``."""
        rows = self.query_rows
        n = layout.n
        if isinstance(rows, str):
            rows = (rows,)
        if rows and isinstance(rows[0], str):
            sel = np.zeros(n, dtype=bool)
            groups = None
            for name in rows:
                if name == "all":
                    sel[:] = True
                elif name == "valid":
                    sel |= layout.valid
                elif name == "prefix":
                    sel[: layout.prefix_len] = True
                elif name == "suffix":
                    sel[layout.prefix_len:] = True
                else:
                    groups = layout.groups() if groups is None else groups
                    if name not in groups:
                        raise unknown_name_error("query_rows", name, list(ROW_KEYWORDS) + list(groups))
                    sel[groups[name]] = True
            return np.flatnonzero(sel)
        idx = np.asarray(rows, dtype=np.int64)
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise FlowlensError(
                f"CaptureConfig.query_rows contains token {int(bad[0])}, but the layout has {n} tokens "
                f"(0–{n - 1})."
            )
        return idx


def as_index_set(value: Iterable[int] | range | None, size: int, what: str) -> tuple[int, ...]:
    """Normalise layers / heads arguments: None → all of ``range(size)``; checks the range."""
    if value is None:
        return tuple(range(size))
    if isinstance(value, (int, np.integer)):
        value = [int(value)]
    out = tuple(sorted({int(v) for v in value}))
    bad = [v for v in out if not 0 <= v < size]
    if bad:
        raise FlowlensError(f"{what} {bad[0]} out of range: the model has {size} {what}s (0–{size - 1}).")
    return out
