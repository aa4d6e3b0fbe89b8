"""Report data: what one frame of the interactive report holds, and its compact JSON encoding.

A report shows, for a list of frames (an episode, or a few chosen frames), the scores of one query
(e.g. the action tokens) under several methods (raw attention, rollout, attention flow), over
denoising steps, layers and heads, projected on each camera's frame and on the prompt's words.

Per frame and method the caller gives ``float [step, layer, head, token]`` over the whole layout:

- an axis of size 1 is *constant* along its slider (flow computed only after the last layer, a
  method without steps); otherwise the step / layer axes must match the report's;
- the head axis is either 1 ("mean" only) or ``num_heads + 1`` with index 0 the fused mean and
  index ``h + 1`` head ``h`` (``with_head_mean`` builds that from per-head scores).

Only what is drawn is embedded: the valid cameras' patches, the prompt words (pieces summed) and
the sink tokens (<bos>, "\\n"), as little-endian float16 (3 significant digits, the precision of
openpi's bf16 probabilities) in base64. Size per frame ≈ 2 bytes × 4/3 × steps × layers × heads ×
(patches + words + sinks) plus the PNG frames. Pi0 LIBERO (2 valid cameras = 512 patches, 11
words + 2 sinks = 525 values): raw attention over 10 steps × 18 layers × 9 heads (mean + 8) is
0.85 M values and rollout over 10 steps × 18 layers × mean 95 K values, ≈ 2.5 MB of scores per
frame (measured in tests/report), plus ≈ 0.1–0.2 MB per camera frame as PNG: ≈ 2.8 MB per frame,
≈ 28 MB for 10 frames. With ``keep_heads=False`` (mean only) ≈ 0.5 MB per frame, 5 MB for 10.
``build_report(max_bytes=...)`` refuses to exceed a bound.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from collections.abc import Mapping

import numpy as np

from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError

SINK_ROLES = {"bos": "<bos>", "newline": "\\n", "eos": "<eos>"}


@dataclasses.dataclass(frozen=True, eq=False)
class ReportFrame:
    """One frame of the report.

    Attributes:
      layout: the TokenLayout of this frame's inference.
      scores: method key ("raw", "rollout", "flow", ...) → float [step, layer, head, token].
      images: camera name → uint8 [H, W, 3] original frame (cameras without an image are drawn
        on black at the model size).
      label: shown next to the frame slider ("frame 12", "t = 1.2 s").
    """

    layout: TokenLayout
    scores: Mapping[str, np.ndarray]
    images: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        if not self.scores:
            raise FlowlensError("ReportFrame.scores is empty; give at least one method, e.g. {'raw': array}.")
        fixed = {}
        for key, arr in self.scores.items():
            a = np.asarray(arr, dtype=np.float32)
            if a.ndim != 4 or a.shape[-1] != self.layout.n:
                raise FlowlensError(
                    f"scores[{key!r}] must be [step, layer, head, token] with token = {self.layout.n}, "
                    "got shape "
                    f"{a.shape}. Use arr[None, :, None] to add a step and a head axis to [layer, token]."
                )
            fixed[str(key)] = a
        object.__setattr__(self, "scores", fixed)
        names = {c.name for c in self.layout.cameras}
        for cam in self.images:
            if cam not in names:
                from flowlens.errors import unknown_name_error

                raise unknown_name_error("images key (camera)", cam, sorted(names))


def with_head_mean(per_head: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """[step, layer, head, token] → [step, layer, 1 + head, token] with the mean (or ``mean``) first."""
    per_head = np.asarray(per_head, dtype=np.float32)
    if per_head.ndim != 4:
        raise FlowlensError(f"per_head must be [step, layer, head, token], got shape {per_head.shape}.")
    m = per_head.mean(axis=2, keepdims=True) if mean is None else np.asarray(mean, dtype=np.float32)
    if m.shape != per_head.shape[:2] + (1,) + per_head.shape[3:]:
        raise FlowlensError(
            f"mean must be [step, layer, 1, token] = {per_head.shape[:2] + (1,) + per_head.shape[3:]}"
            f", got {m.shape}."
        )
    return np.concatenate([m, per_head], axis=2)


def display_tokens(layout: TokenLayout) -> dict:
    """What the report draws of a layout and where it sits in the compact value vector.

    Returns:
      {"cameras": [{name, grid, patch, model, frame, rotate180, box, offset}], "absent_cameras":
       [names of masked cameras: no image, not drawn], "words": [...],
       "sinks": [...], "word_offset", "sink_offset", "K"} plus private index arrays.
    """
    cams, offset = [], 0
    for cam in layout.cameras:
        if not cam.valid:
            continue
        tf = cam.transform
        cams.append(
            {
                "name": cam.name,
                "grid": list(cam.grid),
                "patch": cam.patch_size,
                "model": list(tf.model_size),
                "frame": list(tf.frame_size),
                "rotate180": bool(tf.rotate180),
                "box": list(tf.content_box),
                "offset": offset,
                "_tokens": cam.indices,
            }
        )
        offset += cam.size
    words, sinks, sink_roles = [], [], []
    text = layout.text
    if text is not None:
        words = list(text.words)
        roles = set(text.roles)
        sink_roles = [r for r in SINK_ROLES if r in roles]
        sinks = [SINK_ROLES[r] for r in sink_roles]
    word_offset = offset
    sink_offset = offset + len(words)
    return {
        "cameras": cams,
        "absent_cameras": [c.name for c in layout.cameras if not c.valid],
        "words": words,
        "sinks": sinks,
        "word_offset": word_offset,
        "sink_offset": sink_offset,
        "K": sink_offset + len(sinks),
        "_sink_roles": sink_roles,
    }


def compact(values: np.ndarray, layout: TokenLayout, shown: dict) -> np.ndarray:
    """float [..., token] → float32 [..., K]: camera patches, then words (pieces summed), then sinks."""
    values = np.asarray(values, dtype=np.float64)
    parts = [values[..., c["_tokens"]] for c in shown["cameras"]]
    text = layout.text
    if text is not None:
        tok = values[..., text.start : text.stop]
        word_of = np.asarray(text.word_of_token)
        onehot = np.zeros((text.size, len(text.words)))
        hit = word_of >= 0
        onehot[np.flatnonzero(hit), word_of[hit]] = 1.0
        parts.append(np.nan_to_num(tok) @ onehot)
        roles = np.asarray(text.roles)
        for role in shown["_sink_roles"]:
            parts.append(np.nansum(tok[..., roles == role], axis=-1, keepdims=True))
    out = np.concatenate(parts, axis=-1) if parts else values[..., :0]
    return out.astype(np.float32)


def encode_f16(values: np.ndarray) -> tuple[str, np.ndarray]:
    """(base64 of little-endian float16, the float16 array). NaN (removed tokens) stays NaN."""
    half = np.asarray(values, dtype=np.float32).astype("<f2")
    return base64.b64encode(half.tobytes()).decode("ascii"), half


def checksum(half: np.ndarray) -> int:
    """FNV-1a (32 bit) over the uint16 bits of a float16 vector; the page computes the same."""
    h = 0x811C9DC5
    for v in np.asarray(half, dtype="<f2").view("<u2").ravel().tolist():
        h ^= v & 0xFF
        h = (h * 0x01000193) & 0xFFFFFFFF
        h ^= v >> 8
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def png_data_url(image: np.ndarray, fmt: str = "png") -> str:
    """uint8 [H, W, 3] → "data:image/png;base64,…" (or JPEG, quality 90, for smaller reports)."""
    from PIL import Image

    from flowlens.figures import check_image

    buf = io.BytesIO()
    Image.fromarray(check_image(image)).save(
        buf,
        format="PNG" if fmt == "png" else "JPEG",
        **({"optimize": True} if fmt == "png" else {"quality": 90}),
    )
    mime = "png" if fmt == "png" else "jpeg"
    return f"data:image/{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def colormap_lut(name: str) -> list[int]:
    """256 RGB triples of a matplotlib colormap, flattened [r0, g0, b0, r1, ...]."""
    import matplotlib

    if name not in matplotlib.colormaps:
        from flowlens.errors import unknown_name_error

        raise unknown_name_error("cmap", name, sorted(matplotlib.colormaps))
    rgb = (matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(int)
    return rgb.ravel().tolist()
