"""Shared helpers of the figure modules: input checks, head/layer selection, colour limits, colorbars.

Axis words as everywhere in flowlens: ``layer``, ``head``, ``step``, ``token`` (the whole layout,
NaN at removed tokens), ``rows``/``cols`` (a camera's patch grid), ``word``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from flowlens.core.frame import FrameTransform
from flowlens.core.layout import TokenLayout
from flowlens.core.segments import ImageSegment
from flowlens.errors import FlowlensError

SPECIAL_LABELS = {"bos": "<bos>", "newline": "\\n", "eos": "<eos>", "pad": "<pad>"}
GROUP_LABELS = {
    "bos": "<bos> (sink)",
    "newline": "\\n (sink)",
    "eos": "<eos>",
    "words": "prompt words",
    "state": "state",
    "actions": "actions",
}


def check_scores(scores, layout: TokenLayout, axes: Sequence[str], argument: str = "scores") -> np.ndarray:
    """float64 array with ``len(axes)`` axes, the last one of size ``layout.n`` (one value per token)."""
    arr = np.asarray(scores, dtype=np.float64)
    want = "[" + ", ".join(axes) + "]"
    if arr.ndim != len(axes) or arr.shape[-1] != layout.n:
        raise FlowlensError(
            f"{argument} must be {want} with token = {layout.n} (every token of the layout, NaN where "
            f"removed), got shape {arr.shape}. Map node scores to tokens with graph.to_tokens(...)."
        )
    return arr


def select_heads(scores: np.ndarray, heads: int | tuple[int, ...] | None, axis: int = 1) -> np.ndarray:
    """Fuse a head axis: None = mean, int = one head, tuple = mean of those heads."""
    n = scores.shape[axis]
    if heads is None:
        return scores.mean(axis=axis)  # NaN (removed tokens) stays NaN
    chosen = [heads] if isinstance(heads, (int, np.integer)) else list(heads)
    bad = [h for h in chosen if not -n <= int(h) < n]
    if bad or not chosen:
        raise FlowlensError(f"heads {bad or chosen} out of range: the scores have {n} heads (0–{n - 1}).")
    sel = np.take(scores, [int(h) % n for h in chosen], axis=axis)
    return sel.mean(axis=axis)


def layer_ids_for(count: int, layer_ids: Sequence[int] | None, argument: str = "layer_ids") -> list[int]:
    if layer_ids is None:
        return list(range(count))
    ids = [int(x) for x in layer_ids]
    if len(ids) != count:
        raise FlowlensError(
            f"{argument} must give one model layer id per row of scores ({count}), got {len(ids)}."
        )
    return ids


def pick_layers(
    scores: np.ndarray, layer_ids: Sequence[int], wanted: Sequence[int] | None
) -> tuple[np.ndarray, list[int]]:
    """Rows of ``scores`` (axis 0) for the wanted model layer ids (None = all)."""
    if wanted is None:
        return scores, list(layer_ids)
    missing = [w for w in wanted if w not in layer_ids]
    if missing:
        raise FlowlensError(
            f"layer {missing[0]} was asked for (FigureConfig.layers) but the scores hold layers "
            f"{list(layer_ids)}; pick some of those or compute the missing layers."
        )
    idx = [list(layer_ids).index(w) for w in wanted]
    return scores[idx], [int(w) for w in wanted]


def limits(values, vmin: float | None = None, vmax: float | None = None) -> tuple[float, float]:
    """Colour limits: [0, nanmax] for non-negative data, given limits win; never an empty range."""
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    lo = vmin if vmin is not None else (min(0.0, float(finite.min())) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if hi <= lo:
        hi = lo + (abs(lo) * 1e-3 or 1e-6)
    return float(lo), float(hi)


def add_colorbar(ax, mappable, label: str | None = None, *, cax=None, axes=None):
    """A slim colorbar next to ``ax`` (or spanning ``axes``) labelled with what the values are."""
    fig = ax.figure
    kw = (
        {"cax": cax}
        if cax is not None
        else {"ax": axes if axes is not None else ax, "fraction": 0.046, "pad": 0.03}
    )
    cb = fig.colorbar(mappable, **kw)
    if label:
        cb.set_label(label)
    cb.ax.tick_params(labelsize=8)
    return cb


def get_ax(ax, figsize=(5.0, 4.0)):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def new_figure(figsize, layout: str | None = "constrained"):
    import matplotlib.pyplot as plt

    return plt.figure(figsize=figsize, layout=layout)


def valid_cameras(layout: TokenLayout) -> list[ImageSegment]:
    return [c for c in layout.cameras if c.valid]


def camera_note(layout: TokenLayout) -> str:
    """Which cameras the model saw and which were absent, e.g. "cameras: base · absent: left wrist,
    right wrist (no image: masked, shares are of the cameras present)"."""
    present = [short_camera(c.name) for c in layout.cameras if c.valid]
    absent = [short_camera(c.name) for c in layout.cameras if not c.valid]
    text = "cameras: " + (", ".join(present) or "none")
    if absent:
        text += f" · absent: {', '.join(absent)} (no image: masked, shares are of the cameras present)"
    return text


def check_image(image, argument: str = "image") -> np.ndarray:
    """uint8 [H, W, 3] (grey [H, W] and RGBA accepted; floats in [0, 1] or [-1, 1] rescaled)."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise FlowlensError(
            f"{argument} must be an RGB frame [height, width, 3] (uint8), got shape {arr.shape}."
        )
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        f = arr.astype(np.float64)
        if f.min() < 0:
            f = (f + 1.0) / 2.0
        if f.max() <= 1.0:
            f = f * 255.0
        arr = np.clip(np.round(f), 0, 255).astype(np.uint8)
    return arr


def model_input_image(frame: np.ndarray, transform: FrameTransform) -> np.ndarray:
    """The model's view of a frame: rotated 180° if so, resized with padding (black) to the model size.

    Args:
      frame: uint8 [H_frame, W_frame, 3] as the user has it.
    Returns:
      uint8 [H_model, W_model, 3].
    """
    from PIL import Image

    frame = check_image(frame, "frame")
    if frame.shape[:2] != tuple(transform.frame_size):
        # A frame that does not match the recorded transform: trust the pixels, rescale the transform.
        transform = FrameTransform(frame.shape[:2], transform.model_size, transform.rotate180)
    if transform.rotate180:
        frame = frame[::-1, ::-1]
    top, left, rh, rw = transform.content_box
    mh, mw = transform.model_size
    out = np.zeros((mh, mw, 3), dtype=np.uint8)
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize((rw, rh), Image.BILINEAR))
    out[top : top + rh, left : left + rw] = resized
    return out


def images_for(images: Mapping[str, np.ndarray] | None, layout: TokenLayout) -> dict[str, np.ndarray]:
    """Validate a camera name → frame mapping against the layout's cameras."""
    if images is None:
        return {}
    names = [c.name for c in layout.cameras]
    out = {}
    for name, img in images.items():
        if name not in names:
            from flowlens.errors import unknown_name_error

            raise unknown_name_error("images key (camera)", name, names)
        out[name] = check_image(img, f"images[{name!r}]")
    return out


def short_camera(name: str) -> str:
    """ "base_0_rgb" → "base", "left_wrist_0_rgb" → "left wrist"."""
    base = name.removesuffix("_rgb")
    parts = [p for p in base.split("_") if not p.isdigit()]
    return " ".join(parts) or name
