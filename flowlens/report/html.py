"""The interactive HTML report: one self-contained file (no network, no CDN) to explore a query's scores.

Sliders for frame, denoising step, layer and head (including "mean"), a method switch (raw
attention / rollout / attention flow, whichever were given), the frame or the model input as
background, hover read-outs on patches and words. Everything — the JavaScript, the CSS, the
frames as base64 PNG, the scores as base64 float16 — is inlined, so the file can be mailed or
archived and opened years later offline.

State lives in the URL hash (``#frame=0&step=2&layer=17&head=mean&method=rollout&view=frame``),
so a view can be linked; ``&drive=layer:5`` moves a slider after load through its input event
(used by the headless-browser test). After every render the page writes ``data-state`` and
``data-checksum`` (FNV-1a of the displayed float16 values, see ``data.checksum``) on ``<body>``.

All text from inputs (prompt words, labels, titles, file names) is inserted with ``textContent``
and the embedded JSON has ``<``, ``>`` and ``&`` escaped, so a prompt containing ``<script>``
renders as text.

    html = build_report([ReportFrame(layout, {"raw": raw, "rollout": roll}, images, "frame 0")])
    write_report("report.html", frames, title="pick up the black bowl · episode 3")
"""

from __future__ import annotations

import html as _html
import json
import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from flowlens.errors import FlowlensError, unknown_name_error
from flowlens.figures.save import write_text
from flowlens.report.data import (
    ReportFrame,
    colormap_lut,
    compact,
    display_tokens,
    encode_f16,
    png_data_url,
)

METHOD_LABELS = {"raw": "raw attention", "rollout": "rollout", "flow": "attention flow"}
DEFAULT_MAX_BYTES = 64_000_000


def _axis_size(frames: Sequence[ReportFrame], axis: int, name: str) -> int:
    sizes = {a.shape[axis] for f in frames for a in f.scores.values()}
    big = sorted(s for s in sizes if s != 1)
    if len(big) > 1:
        raise FlowlensError(
            f"every method's {name} axis must be 1 (constant) or the same length; "
            f"got lengths {sorted(sizes)}."
        )
    return big[0] if big else 1


def _labels(given: Sequence | None, count: int, default, argument: str) -> list[str]:
    if given is None:
        return [default(i) for i in range(count)]
    if len(given) != count:
        raise FlowlensError(
            f"{argument} must have {count} entries (the longest such axis of the scores), got {len(given)}."
        )
    return [str(g) for g in given]


def report_payload(
    frames: Sequence[ReportFrame],
    *,
    title: str = "flowlens report",
    query: str = "action tokens",
    source: str = "",
    layer_ids: Sequence[int] | None = None,
    step_labels: Sequence[str] | None = None,
    head_labels: Sequence[str] | None = None,
    method_labels: Mapping[str, str] | None = None,
    keep_heads: bool = True,
    image_format: str = "png",
    cmap: str = "inferno",
    word_cmap: str = "YlOrRd",
    alpha: float = 0.55,
    interpolation: str = "nearest",
) -> tuple[dict, dict]:
    """The JSON payload of a report and the checksums of the maps it can show.

    ``interpolation``: "nearest" (the frame view shows the patch grid, as the model view) or
    "bilinear" (the frame view smooths between patches), as ``--interpolation`` for the figures.

    Returns:
      (payload, checksums) where ``checksums[(frame, method, step, layer, head)]`` is the FNV-1a of
      the float16 vector the page displays for that slider position (for tests).
    """
    frames = list(frames)
    if not frames:
        raise FlowlensError("frames is empty; a report needs at least one ReportFrame.")
    if image_format not in ("png", "jpeg"):
        raise FlowlensError(f"image_format must be 'png' or 'jpeg', got {image_format!r}.")
    if not 0.0 <= alpha <= 1.0:
        raise FlowlensError(f"alpha must be in [0, 1], got {alpha}.")
    if interpolation not in ("nearest", "bilinear"):
        raise unknown_name_error("interpolation", interpolation, ("nearest", "bilinear"))
    n_steps = _axis_size(frames, 0, "step")
    n_layers = _axis_size(frames, 1, "layer")
    n_heads = _axis_size(frames, 2, "head") if keep_heads else 1
    methods: list[str] = []
    for f in frames:
        methods += [m for m in f.scores if m not in methods]
    labels_m = {**METHOD_LABELS, **(method_labels or {})}
    heads = _labels(head_labels, n_heads, lambda i: "mean" if i == 0 else f"head {i - 1}", "head_labels")
    payload = {
        "title": str(title),
        "query": str(query),
        "source": str(source),
        "layers": _labels(layer_ids, n_layers, str, "layer_ids"),
        "steps": _labels(step_labels, n_steps, str, "step_labels"),
        "heads": heads,
        "methods": [{"key": m, "label": labels_m.get(m, m)} for m in methods],
        "cmap": colormap_lut(cmap),
        "word_cmap": colormap_lut(word_cmap),
        "alpha": float(alpha),
        "interpolation": interpolation,
        "frames": [],
    }
    checksums = {}
    from flowlens.report.data import checksum

    for fi, f in enumerate(frames):
        shown = display_tokens(f.layout)
        entry = {
            "label": f.label or f"frame {fi}",
            "words": shown["words"],
            "sinks": shown["sinks"],
            "word_offset": shown["word_offset"],
            "sink_offset": shown["sink_offset"],
            "K": shown["K"],
            "absent_cameras": shown["absent_cameras"],
            "cameras": [],
            "data": {},
        }
        for cam in shown["cameras"]:
            c = {k: v for k, v in cam.items() if not k.startswith("_")}
            img = f.images.get(cam["name"])
            c["image"] = png_data_url(img, image_format) if img is not None else None
            if img is not None:
                c["frame"] = list(np.asarray(img).shape[:2])
            entry["cameras"].append(c)
        for m, arr in f.scores.items():
            if not keep_heads:
                arr = arr[:, :, :1]
            for axis, (size, name) in enumerate(((n_steps, "step"), (n_layers, "layer"), (n_heads, "head"))):
                if arr.shape[axis] not in (1, size):
                    raise FlowlensError(
                        f"frame {fi} scores[{m!r}] has {arr.shape[axis]} entries on the {name} axis; "
                        "expected 1 "
                        f"(constant) or {size} like the other methods."
                    )
            vals = compact(arr, f.layout, shown)
            b64, half = encode_f16(vals)
            entry["data"][m] = {"shape": list(half.shape), "b64": b64}
            s_, l_, h_ = half.shape[:3]
            for s in range(s_):
                for layer in range(l_):
                    for h in range(h_):
                        checksums[(fi, m, s, layer, h)] = checksum(half[s, layer, h])
        payload["frames"].append(entry)
    return payload, checksums


_PLACEHOLDER = re.compile(r"\{\{(TITLE|CSS|JS|DATA)\}\}")


def _asset(name: str) -> str:
    return resources.files("flowlens.report").joinpath("assets", name).read_text(encoding="utf-8")


def _script_json(payload: dict) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' survive (they become \\u003c …)."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def build_report(
    frames: Sequence[ReportFrame], *, max_bytes: int | None = DEFAULT_MAX_BYTES, **kwargs
) -> str:
    """Render the report HTML.

    Args:
      frames: the frames, in slider order.
      max_bytes: refuse (FlowlensError) to build a report larger than this (None: no bound).
      **kwargs: ``report_payload`` options: title, query, source, layer_ids, step_labels,
        head_labels, method_labels, keep_heads, image_format ("png" | "jpeg"), cmap, word_cmap, alpha,
        interpolation ("nearest" | "bilinear": the frame view).
    Returns:
      The HTML document as a string.
    """
    payload, _ = report_payload(frames, **kwargs)
    data = _script_json(payload)
    fills = {
        "TITLE": _html.escape(str(payload["title"])),
        "CSS": _asset("report.css"),
        "JS": _asset("report.js"),
        "DATA": data,
    }
    # One pass over the template: text inside a filled value (a "{{DATA}}" in a title) is never re-read.
    page = _PLACEHOLDER.sub(lambda m: fills[m.group(1)], _asset("report.html"))
    size = len(page.encode("utf-8"))
    if max_bytes is not None and size > max_bytes:
        raise FlowlensError(
            f"the report would be {size / 1e6:.1f} MB, above max_bytes={max_bytes / 1e6:.1f} MB. "
            "Embed fewer frames, "
            "pass keep_heads=False (mean only), fewer steps/layers, image_format='jpeg', or raise max_bytes."
        )
    return page


def write_report(path: str | os.PathLike, frames: Sequence[ReportFrame], **kwargs) -> Path:
    """Build the report and write it atomically to ``path`` (.html). Returns the path."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise FlowlensError(f"path must end in .html, got {str(path)!r}.")
    return write_text(path, build_report(frames, **kwargs))
