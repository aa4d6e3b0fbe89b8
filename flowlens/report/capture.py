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

from flowlens.analysis.rows import query_tokens, read_rows
from flowlens.core.capture import Capture
from flowlens.errors import FlowlensError, unknown_name_error
from flowlens.report.data import ReportFrame, with_head_mean

METHODS = ("raw", "rollout")


def raw_scores(capture: Capture, tokens: np.ndarray) -> np.ndarray:
    """Raw attention of the query tokens, mean over them: float32 [step, layer, head, token].

    Suffix queries (state, actions) read every denoising step; prefix queries (patches, words)
    read the prefix pass (one step). Rows come from ``flowlens.analysis.rows.read_rows`` (heads as
    stored); keys outside the pass and invalid keys are NaN.
    """
    tokens = np.atleast_1d(np.asarray(tokens, dtype=np.int64))
    suffix = tokens >= capture.layout.prefix_len
    if suffix.any() and not suffix.all():
        raise FlowlensError("query mixes prefix and suffix tokens; pick one side (e.g. the action tokens).")
    if suffix.all() and not capture.steps:
        raise FlowlensError("this capture recorded no suffix pass for the query.")
    steps = capture.step_ids if suffix.all() else (0,)
    arr = np.stack([read_rows(capture, tokens, step=s, heads="stored").on_layout().mean(axis=2) for s in steps])
    return arr.astype(np.float32)


def report_frame(
    capture: Capture,
    images: Mapping[str, np.ndarray] | None = None,
    *,
    label: str = "",
    query: Sequence[int] | None = None,
    methods: Sequence[str] = METHODS,
    extra: Mapping[str, np.ndarray] | None = None,
    residual: float = 0.5,
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
      residual: r of the rollout's rownorm((1 - r)·A + r·I).
    Returns:
      A ReportFrame with scores {"raw": [step, layer, 1 + head, token],
      "rollout": [step, layer, 1, token], ...}.
    """
    layout = capture.layout
    for m in methods:
        if m not in METHODS:
            raise unknown_name_error("methods", m, METHODS)
    tokens = query_tokens(layout, query, select)
    scores: dict[str, np.ndarray] = {}
    if "raw" in methods:
        raw = raw_scores(capture, tokens)
        scores["raw"] = raw if raw.shape[2] == 1 else with_head_mean(raw)
    if "rollout" in methods:
        from flowlens.analysis.step_rollout import rollout_all_steps

        steps = "all" if capture.steps else 0
        r = rollout_all_steps(capture, query=tokens, steps=steps, residual=residual) if capture.steps else None
        if r is None:
            from flowlens.analysis.rollout import rollout
            from flowlens.core.graph import TokenGraph

            ro = rollout(TokenGraph.from_capture(capture, residual=residual), tokens)
            vals = np.stack([ro.token_scores(layer) for layer in ro.layers])[None]
        else:
            vals = r.values.mean(axis=2)  # [step, layer, token]
        vals = np.asarray(vals, dtype=np.float64)
        vals[..., ~layout.valid] = np.nan
        scores["rollout"] = vals[:, :, None].astype(np.float32)
    for key, arr in (extra or {}).items():
        scores[str(key)] = np.asarray(arr, dtype=np.float32)
    return ReportFrame(layout=layout, scores=scores, images=dict(images or {}), label=label)
