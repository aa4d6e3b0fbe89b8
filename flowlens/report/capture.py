"""From a Capture to a ReportFrame: the per-step, per-layer, per-head scores of one query.

``report_frame`` computes what the report shows for one recorded inference: raw attention of the
query (mean over its tokens) for every denoising step, layer and head (plus the head mean), and
rollout for every step and layer (``flowlens.analysis.step_rollout.rollout_all_steps``, heads
fused by mean). Other methods — attention flow, a custom relevance — are passed in ``extra`` as
``float [step, layer, head, token]`` arrays (size-1 axes are constant in the report).

    frame = report_frame(capture, {"base_0_rgb": rgb}, label="frame 12")
    write_report("episode.html", [frame, ...])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from flowlens.core.capture import Capture
from flowlens.errors import FlowlensError, unknown_name_error
from flowlens.report.data import ReportFrame, with_head_mean

METHODS = ("raw", "rollout")


def raw_scores(capture: Capture, tokens: np.ndarray) -> np.ndarray:
    """Raw attention of the query tokens, mean over them: float32 [step, layer, head, token].

    Suffix queries (state, actions) read every denoising step; prefix queries (patches, words)
    read the prefix pass (one step). Keys outside the pass and invalid keys are NaN.
    """
    layout = capture.layout
    suffix = tokens >= layout.prefix_len
    if suffix.any() and not suffix.all():
        raise FlowlensError("query mixes prefix and suffix tokens; pick one side (e.g. the action tokens).")
    passes = capture.steps if suffix.all() else [capture.prefix or capture.full]
    if not passes or passes[0] is None:
        raise FlowlensError(
            f"this capture recorded no {'suffix' if suffix.all() else 'prefix'} pass for the query."
        )
    out = []
    for p in passes:
        missing = np.setdiff1d(tokens, p.query_rows)
        if missing.size:
            raise FlowlensError(
                f"query token {int(missing[0])} was not recorded in the {p.kind.value} pass; "
                "record those rows (capture query rows) or choose recorded ones."
            )
        rows = (
            np.searchsorted(p.query_rows, tokens)
            if np.all(np.diff(p.query_rows) > 0)
            else np.array([int(np.flatnonzero(p.query_rows == t)[0]) for t in tokens])
        )
        vals = p.probs[:, :, rows].mean(axis=2, dtype=np.float64)  # [layer, head, key]
        full = np.full(vals.shape[:2] + (layout.n,), np.nan)
        full[..., : p.key_count] = vals
        out.append(full)
    arr = np.stack(out)
    arr[..., ~layout.valid] = np.nan
    return arr.astype(np.float32)


def report_frame(
    capture: Capture,
    images: Mapping[str, np.ndarray] | None = None,
    *,
    label: str = "",
    query: Sequence[int] | None = None,
    methods: Sequence[str] = METHODS,
    extra: Mapping[str, np.ndarray] | None = None,
    **select,
) -> ReportFrame:
    """Build one report frame from a capture.

    Args:
      capture: one inference (prefix pass + every denoising step; all valid rows for rollout).
      images: camera name → uint8 [H, W, 3] original frame.
      label: frame label in the report.
      query: layout token indices of the query, or selection keywords (``horizon=0``,
        ``group="actions"`` …) in ``select``; default: the action tokens.
      methods: which of "raw", "rollout" to compute.
      extra: more methods as float [step, layer, head, token] (e.g. {"flow": ...}).
    Returns:
      A ReportFrame with scores {"raw": [step, layer, 1 + head, token],
      "rollout": [step, layer, 1, token], ...}.
    """
    layout = capture.layout
    for m in methods:
        if m not in METHODS:
            raise unknown_name_error("methods", m, METHODS)
    if query is not None and select:
        raise FlowlensError("give either query token indices or selection keywords, not both.")
    tokens = (
        np.atleast_1d(np.asarray(query, dtype=np.int64))
        if query is not None
        else layout.select(**select)
        if select
        else layout.select(kind="action")
    )
    scores: dict[str, np.ndarray] = {}
    if "raw" in methods:
        raw = raw_scores(capture, tokens)
        scores["raw"] = raw if raw.shape[2] == 1 else with_head_mean(raw)
    if "rollout" in methods:
        from flowlens.analysis.step_rollout import rollout_all_steps

        steps = "all" if capture.steps else 0
        r = rollout_all_steps(capture, query=tokens, steps=steps) if capture.steps else None
        if r is None:
            from flowlens.analysis.rollout import rollout
            from flowlens.core.graph import TokenGraph

            ro = rollout(TokenGraph.from_capture(capture), tokens)
            vals = np.stack([ro.token_scores(layer) for layer in ro.layers])[None]
        else:
            vals = r.values.mean(axis=2)  # [step, layer, token]
        vals = np.asarray(vals, dtype=np.float64)
        vals[..., ~layout.valid] = np.nan
        scores["rollout"] = vals[:, :, None].astype(np.float32)
    for key, arr in (extra or {}).items():
        scores[str(key)] = np.asarray(arr, dtype=np.float32)
    return ReportFrame(layout=layout, scores=scores, images=dict(images or {}), label=label)
