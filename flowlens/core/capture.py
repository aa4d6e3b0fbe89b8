"""Capture: what one inference of a Pi0-family policy recorded.

An inference is one *prefix pass* (images + prompt, run once into the KV cache) followed by one
*suffix pass* per flow-matching denoising step (state + actions querying ``[prefix | suffix]``
keys). A training-style *full pass* runs the whole sequence at once. Every recorded pass holds,
for the recorded layers, attention probabilities ``[layer, head, query, key]`` in float32, taken
before openpi's bf16 cast.

Axis words used across flowlens: ``layer`` (recorded layers), ``head`` (query heads; 8 for Pi0,
sharing one key/value head), ``query`` (recorded query rows, absolute token indices), ``key``
(tokens ``0 .. key_count-1`` of the layout), ``step`` (denoising step, 0 is t = 1.0).

Memory: a Pi0 LIBERO prefix pass over 18 layers × 8 heads is 18·8·816² floats ≈ 383 MB; each
denoising step ≈ 25 MB. Record selectively (layers, query rows, fused heads) for whole episodes.
"""

from __future__ import annotations

import dataclasses
import enum
import warnings
from collections.abc import Sequence

import numpy as np

from flowlens.core.frame import FrameTransform  # noqa: F401  (re-exported for capture users)
from flowlens.core.checks import LAYER_IDS, index_array
from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError, check_index

ROW_SUM_TOLERANCE = 1e-3


class PassKind(enum.StrEnum):
    PREFIX = "prefix"
    SUFFIX = "suffix"
    FULL = "full"


HEAD_REDUCTIONS = ("mean", "max", "min")


@dataclasses.dataclass(frozen=True, eq=False)
class AttentionPass:
    """Attention probabilities of one attention call, over the recorded layers.

    Attributes:
      kind: prefix, suffix (one denoising step) or full (training-style joint pass).
      probs: float32 [layer, head, query, key]; keys are tokens ``0 .. key_count-1``.
      layers: model layer id of each entry of the layer axis, ascending.
      query_rows: int64 [query]: absolute token index of each query row.
      step: denoising step index (suffix passes), 0 being the first step (t = 1.0).
      time: flow-matching time t of the step (suffix passes).
      head_reduction: None when ``probs`` holds every head; "mean"/"max"/"min" when the head axis
        has size 1 and holds that fusion of all heads (recorded fused to save memory).
      residual: None, or float32 [num_layers + 1, T_pass, width] (``CaptureConfig(residual=True)``):
        the residual stream of *every* query token of this attention call (the prefix pass: the
        ``prefix_len`` prefix tokens; a suffix pass: the ``suffix_len`` suffix tokens) — entry l is
        the input of model layer l, the last entry the output before the final norm — in the
        width of the expert that runs those tokens.
    """

    kind: PassKind
    probs: np.ndarray
    layers: tuple[int, ...]
    query_rows: np.ndarray
    step: int | None = None
    time: float | None = None
    head_reduction: str | None = None
    residual: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", PassKind(self.kind))
        probs = np.asarray(self.probs)
        if probs.ndim != 4:
            raise FlowlensError(
                f"probs must be [layer, head, query, key] (4 axes), got shape {probs.shape}."
            )
        if probs.dtype != np.float32:
            probs = probs.astype(np.float32)
        object.__setattr__(self, "probs", probs)
        rows = np.asarray(self.query_rows, dtype=np.int64).reshape(-1)
        object.__setattr__(self, "query_rows", rows)
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        if len(self.layers) != probs.shape[0]:
            raise FlowlensError(
                f"layers lists {len(self.layers)} layer ids but probs has {probs.shape[0]} on its layer axis."
            )
        if list(self.layers) != sorted(set(self.layers)):
            raise FlowlensError(f"layers must be ascending and unique, got {self.layers}.")
        if rows.size != probs.shape[2]:
            raise FlowlensError(
                f"query_rows has {rows.size} entries but probs has {probs.shape[2]} query rows."
            )
        if self.head_reduction is not None and (
            self.head_reduction not in HEAD_REDUCTIONS or probs.shape[1] != 1
        ):
            raise FlowlensError(
                f"head_reduction must be None or one of {HEAD_REDUCTIONS} with a head axis of size 1, "
                f"got {self.head_reduction!r} with {probs.shape[1]} heads."
            )
        if self.kind == PassKind.SUFFIX and self.step is None:
            raise FlowlensError("a suffix pass needs its denoising step index (step=...).")
        if self.residual is not None:
            res = np.asarray(self.residual, dtype=np.float32)
            if res.ndim != 3:
                raise FlowlensError(
                    f"residual must be [num_layers + 1, tokens, width] (3 axes), got shape {res.shape}.")
            object.__setattr__(self, "residual", res)

    @property
    def key_count(self) -> int:
        return self.probs.shape[3]

    @property
    def num_heads(self) -> int:
        return self.probs.shape[1]

    def layer_index(self, layer: int) -> int:
        """Position of model layer ``layer`` on this pass's layer axis."""
        if layer not in self.layers:
            raise FlowlensError(
                f"layer {layer} was not recorded in the {self.kind.value} pass; recorded layers: "
                f"{list(self.layers)}. Record it (capture layers=...) or pick one of those."
            )
        return self.layers.index(layer)

    @property
    def nbytes(self) -> int:
        return int(self.probs.nbytes) + (0 if self.residual is None else int(self.residual.nbytes))


@dataclasses.dataclass(frozen=True, eq=False)
class Capture:
    """Everything one inference recorded.

    Attributes:
      layout: the token layout of the sequence.
      num_layers: depth of the model (18 for Pi0), whether or not all layers were recorded.
      num_heads: query heads per layer (8 for Pi0).
      passes: the recorded attention calls: at most one prefix pass, suffix passes in step order,
        and/or one full pass.
      actions: float32 [horizon, action_dim] predicted action chunk, or None.
      model: model / config name ("pi0_libero", "tabletop", "synthetic", ...).
      metadata: JSON-serialisable facts (prompt, frame index, episode, success, ...).
    """

    layout: TokenLayout
    num_layers: int
    num_heads: int
    passes: tuple[AttentionPass, ...]
    actions: np.ndarray | None = None
    model: str = "unknown"
    metadata: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "passes", tuple(self.passes))
        validate_capture(self)

    # ---- pass access --------------------------------------------------------------------
    @property
    def prefix(self) -> AttentionPass | None:
        return next((p for p in self.passes if p.kind == PassKind.PREFIX), None)

    @property
    def full(self) -> AttentionPass | None:
        return next((p for p in self.passes if p.kind == PassKind.FULL), None)

    @property
    def steps(self) -> tuple[AttentionPass, ...]:
        return tuple(p for p in self.passes if p.kind == PassKind.SUFFIX)

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def times(self) -> tuple[float | None, ...]:
        return tuple(p.time for p in self.steps)

    @property
    def step_ids(self) -> tuple[int, ...]:
        """Denoising step ids of the recorded suffix passes, ascending (0 is t = 1.0)."""
        return tuple(p.step for p in self.steps)

    def step(self, step: int) -> AttentionPass:
        """The suffix pass of denoising step ``step`` (its id; negative counts from the last recorded)."""
        steps = self.steps
        if not steps:
            raise FlowlensError("this capture recorded no denoising steps (suffix passes).")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise FlowlensError(f"step must be an integer step id, got {step!r}.")
        if step < 0:
            return steps[check_index("step", int(step), len(steps), "recorded denoising steps")]
        for p in steps:
            if p.step == step:
                return p
        ids = self.step_ids
        if ids == tuple(range(len(ids))):
            check_index("step", int(step), len(ids), "denoising steps")
        raise FlowlensError(
            f"step {step} was not recorded; this capture holds denoising steps {list(ids)}. "
            "Record it (CaptureConfig(steps=...)) or pick one of those."
        )

    @property
    def recorded_layers(self) -> tuple[int, ...]:
        """Layers recorded by every pass."""
        sets = [set(p.layers) for p in self.passes]
        return tuple(sorted(set.intersection(*sets))) if sets else ()

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.passes)

    def __repr__(self) -> str:
        return (f"Capture({self.model}, {self.layout.variant}, n={self.layout.n}, layers={self.num_layers}, "
                f"heads={self.num_heads}, passes={[p.kind.value for p in self.passes]}, "
                f"{self.nbytes / 1e6:.1f} MB)")


def resolve_layers(passes: Sequence[AttentionPass], layers: Sequence[int] | None, num_layers: int,
                   what: str = "the passes needed") -> tuple[int, ...]:
    """The model layers to analyse: ``layers`` (checked), or every layer all ``passes`` recorded.

    Raises:
      FlowlensError: a layer outside the model, or one that some pass did not record.
    """
    available = sorted(set.intersection(*(set(p.layers) for p in passes)))
    if layers is None:
        return tuple(available)
    ids = index_array("layers", layers, expected=LAYER_IDS)
    chosen = [check_index("layer", x, num_layers, "layers") for x in ids]
    missing = [x for x in chosen if x not in available]
    if missing:
        raise FlowlensError(f"layer {missing[0]} was not recorded in {what}; recorded: {available}.")
    return tuple(sorted(chosen))


def validate_capture(capture: Capture, *, check_rows: bool = True) -> None:
    """Check every pass against the layout; raise FlowlensError on a mismatch.

    Shapes: prefix passes have ``prefix_len`` keys and query rows inside the prefix; suffix passes
    ``n`` keys and rows inside the suffix; full passes ``n`` keys. Values must be finite and in
    [0, 1]. Rows (of valid queries) whose sum is off 1 by more than ``ROW_SUM_TOLERANCE`` warn,
    naming the worst row.
    """
    layout = capture.layout
    if capture.num_layers <= 0 or capture.num_heads <= 0:
        raise FlowlensError(
            f"num_layers and num_heads must be positive, got {capture.num_layers} and {capture.num_heads}."
        )
    kinds = [p.kind for p in capture.passes]
    if kinds.count(PassKind.PREFIX) > 1 or kinds.count(PassKind.FULL) > 1:
        raise FlowlensError("a capture holds at most one prefix pass and one full pass.")
    step_ids = [p.step for p in capture.passes if p.kind == PassKind.SUFFIX]
    if step_ids != sorted(set(step_ids)) or any(s < 0 for s in step_ids):
        raise FlowlensError(
            f"suffix passes must have unique step ids >= 0 in ascending order, got steps {step_ids}."
        )
    valid = layout.valid
    for p in capture.passes:
        expected_keys = layout.prefix_len if p.kind == PassKind.PREFIX else layout.n
        where = f"the {p.kind.value} pass" + (f" of step {p.step}" if p.step is not None else "")
        if p.key_count != expected_keys:
            raise FlowlensError(
                f"attention of {where} has {p.key_count} keys but the layout expects {expected_keys} "
                f"({layout!r}). Is the layout from the same inputs?"
            )
        lo, hi = {PassKind.PREFIX: (0, layout.prefix_len), PassKind.SUFFIX: (layout.prefix_len, layout.n),
                  PassKind.FULL: (0, layout.n)}[p.kind]
        if p.query_rows.size and (p.query_rows.min() < lo or p.query_rows.max() >= hi):
            raise FlowlensError(
                f"query_rows of {where} must lie in [{lo}, {hi}), got rows {p.query_rows.min()}..{p.query_rows.max()}."
            )
        if p.residual is not None and p.residual.shape[:2] != (capture.num_layers + 1, hi - lo):
            raise FlowlensError(
                f"residual of {where} must be [num_layers + 1, {hi - lo}, width] (every token of the pass), "
                f"got shape {p.residual.shape}.")
        if p.head_reduction is None and p.num_heads != capture.num_heads:
            raise FlowlensError(
                f"{where} has {p.num_heads} heads but the capture says num_heads={capture.num_heads}."
            )
        bad_layers = [x for x in p.layers if not 0 <= x < capture.num_layers]
        if bad_layers:
            raise FlowlensError(
                f"{where} lists layer {bad_layers[0]} but the model has {capture.num_layers} layers "
                f"(0–{capture.num_layers - 1})."
            )
        check_probabilities(p.probs, f"probs of {where}", valid_rows=valid[p.query_rows] if check_rows else None)


def check_probabilities(probs: np.ndarray, name: str, *, valid_rows: np.ndarray | None = None,
                        tolerance: float = ROW_SUM_TOLERANCE, stacklevel: int = 3) -> None:
    """Raise on NaN/inf or values outside [0, 1]; warn when rows do not sum to 1.

    Args:
      probs: [..., query, key] attention probabilities.
      name: how to call the array in messages.
      valid_rows: bool [query]; only these rows are checked for their sum (None: all rows).
      stacklevel: of the row-sum warning (3: the caller of the function that called this one).
    """
    if not np.isfinite(probs).all():
        bad = np.argwhere(~np.isfinite(probs))[0]
        raise FlowlensError(
            f"{name} contains NaN or inf (first at index {tuple(int(i) for i in bad)}); "
            "attention probabilities must be finite. Was the softmax computed in bf16 or on -inf logits?"
        )
    lo, hi = float(probs.min(initial=0.0)), float(probs.max(initial=0.0))
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise FlowlensError(
            f"{name} must hold probabilities in [0, 1], got values in [{lo:.4g}, {hi:.4g}]. "
            "Pass softmax outputs, not logits."
        )
    if probs.size == 0:
        return
    check_row_sums(probs.sum(axis=-1, dtype=np.float64), name, valid_rows=valid_rows, tolerance=tolerance,
                   stacklevel=stacklevel + 1)


def check_row_sums(sums: np.ndarray, name: str, *, valid_rows: np.ndarray | None = None,
                   tolerance: float = ROW_SUM_TOLERANCE, stacklevel: int = 3) -> None:
    """Warn, naming the worst row, when float64 row sums ``sums`` [..., query] are off 1 by > tolerance."""
    err = np.abs(sums - 1.0)
    if valid_rows is not None:
        err = np.where(np.asarray(valid_rows, dtype=bool), err, 0.0)
    worst = float(err.max())
    if worst > tolerance:
        idx = tuple(int(i) for i in np.unravel_index(int(err.argmax()), err.shape))
        warnings.warn(
            f"{name}: rows do not sum to 1 (worst row {idx} sums to {float(sums[idx]):.6f}, tolerance "
            f"{tolerance}). bf16 probabilities? flowlens renormalises rows where an analysis needs it.",
            stacklevel=stacklevel,
        )


def make_capture(
    layout: TokenLayout,
    *,
    prefix_probs: np.ndarray | None = None,
    step_probs: Sequence[np.ndarray] = (),
    times: Sequence[float] | None = None,
    layers: Sequence[int] | None = None,
    num_layers: int | None = None,
    actions: np.ndarray | None = None,
    model: str = "unknown",
    metadata: dict | None = None,
) -> Capture:
    """Build a Capture from all-row arrays: prefix ``[layer, head, prefix, prefix]`` and per step
    ``[layer, head, suffix, n]`` (all prefix / suffix query rows)."""
    passes = []
    n_layers = None
    if prefix_probs is not None:
        n_layers = prefix_probs.shape[0]
    elif step_probs:
        n_layers = np.asarray(step_probs[0]).shape[0]
    if n_layers is None:
        raise FlowlensError("make_capture needs prefix_probs or step_probs.")
    layers = tuple(range(n_layers)) if layers is None else tuple(layers)
    num_heads = (prefix_probs if prefix_probs is not None else step_probs[0]).shape[1]
    if prefix_probs is not None:
        passes.append(AttentionPass(PassKind.PREFIX, prefix_probs, layers, np.arange(layout.prefix_len)))
    if times is None:
        times = [1.0 - i / max(len(step_probs), 1) for i in range(len(step_probs))]
    for i, (probs, t) in enumerate(zip(step_probs, times, strict=True)):
        passes.append(AttentionPass(PassKind.SUFFIX, probs, layers, np.arange(layout.prefix_len, layout.n),
                                    step=i, time=float(t)))
    return Capture(layout=layout, num_layers=num_layers or (max(layers) + 1), num_heads=num_heads,
                   passes=tuple(passes), actions=actions, model=model, metadata=dict(metadata or {}))
