"""Attention over time: per-frame heatmap overlays written as MP4 (PyAV) or GIF (Pillow), atomically.

No external ffmpeg binary is needed: MP4 goes through PyAV's bundled libav (H.264, yuv420p; odd
sizes are padded to even), GIF through Pillow. The file appears only once complete.

    rgb = overlay_frame(frame, grid, segment, vmax=...)             # one uint8 [H, W, 3] frame
    write_video(rgb_frames, "episode.mp4", fps=10)
    attention_video(frames [T, H, W, 3], scores [T, token], layout, "ep.gif", camera=0)
    attention_video([{camera: frame}] * T, scores [T, token], layout, "ep.mp4")  # cameras side by side
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from flowlens.core.frame import FrameTransform
from flowlens.core.layout import TokenLayout
from flowlens.core.segments import ImageSegment
from flowlens.errors import FlowlensError, unknown_name_error
from flowlens.figures._common import check_image, limits, model_input_image, short_camera
from flowlens.figures.save import atomic_path
from flowlens.projection import camera_segment, frame_heatmap, model_heatmap, patch_grid

FORMATS = ("mp4", "gif")
MIN_WIDTH = 320  # video frames narrower than this are enlarged (nearest) so labels and scale read


def overlay_frame(
    frame: np.ndarray | None,
    grid: np.ndarray,
    segment: ImageSegment,
    *,
    on: str = "frame",
    cmap: str = "inferno",
    alpha: float = 0.55,
    vmin: float | None = None,
    vmax: float | None = None,
    smooth: bool = True,
    label: str | None = None,
) -> np.ndarray:
    """Blend a camera's heatmap onto its frame without a matplotlib figure (fast, for videos).

    Args:
      frame: uint8 [H, W, 3] original frame (None: the heatmap alone).
      grid: float [rows, cols] patch scores.
      segment: the camera's ImageSegment.
      on: "frame" (original frame) or "model" (model input).
      vmin, vmax: colour limits (keep them fixed over a video so frames are comparable).
      label: text burnt into the top-left corner (e.g. "frame 12 · layer 17").
    Returns:
      uint8 [H, W, 3].
    """
    import matplotlib

    if on not in ("frame", "model"):
        raise unknown_name_error("on", on, ("frame", "model"))
    img = check_image(frame) if frame is not None else None
    if on == "frame":
        if img is not None and img.shape[:2] != tuple(segment.transform.frame_size):
            tf = segment.transform
            segment = dataclasses.replace(
                segment, transform=FrameTransform(img.shape[:2], tf.model_size, tf.rotate180)
            )
        heat = frame_heatmap(grid, segment, smooth=smooth)
    else:
        heat = model_heatmap(grid, segment)
        img = model_input_image(img, segment.transform) if img is not None else None
    lo, hi = limits(grid, vmin, vmax)
    rgba = matplotlib.colormaps[cmap](np.clip((np.nan_to_num(heat, nan=lo) - lo) / (hi - lo), 0, 1))
    color = rgba[..., :3] * 255.0
    if img is None:
        out = color
    else:
        a = alpha * (~np.isnan(heat))[..., None]
        out = (1 - a) * img.astype(np.float64) + a * color
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    if label:
        from PIL import Image, ImageDraw

        pil = Image.fromarray(out)
        draw = ImageDraw.Draw(pil)
        font = _font(out.shape[0])
        box = draw.textbbox((4, 3), label, font=font)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
        draw.text((4, 3), label, fill=(255, 255, 255), font=font)
        out = np.asarray(pil)
    return out


def _font(height: int):
    """PIL's default font at a size readable on a ``height``-pixel frame (≥ 11 px)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=max(11, height // 18))
    except TypeError:  # pragma: no cover - Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def colorbar_strip(width: int, lo: float, hi: float, *, cmap: str = "inferno", label: str = "") -> np.ndarray:
    """uint8 [h, width, 3]: a horizontal colour scale from ``lo`` (left) to ``hi`` (right), its two
    values and ``label`` written on it, to put under video frames (h grows with the width)."""
    import matplotlib
    from PIL import Image, ImageDraw

    bar_h = max(8, width // 40)
    font = _font(min(max(width, 200), 400))  # wide strips (cameras side by side): text stays in proportion
    text_h = font.getbbox("0.0")[3] + 4
    strip = np.full((bar_h + text_h + 4, width, 3), 255, np.uint8)
    ramp = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, width))[:, :3] * 255.0
    strip[2 : 2 + bar_h] = np.round(ramp).astype(np.uint8)[None]
    pil = Image.fromarray(strip)
    draw = ImageDraw.Draw(pil)
    y = bar_h + 3
    draw.text((2, y), f"{lo:.3g}", fill=(0, 0, 0), font=font)
    hi_text = f"{hi:.3g}"
    draw.text((width - 2 - draw.textlength(hi_text, font=font), y), hi_text, fill=(0, 0, 0), font=font)
    if label:
        draw.text(((width - draw.textlength(label, font=font)) / 2, y), label, fill=(60, 60, 60), font=font)
    return np.asarray(pil)


def write_video(
    frames: Iterable[np.ndarray], path: str | os.PathLike, *, fps: float = 10.0, quality: int = 23
) -> Path:
    """Write uint8 RGB frames to an MP4 (H.264 via PyAV) or GIF (Pillow), chosen by the suffix.

    Args:
      frames: iterable of uint8 [H, W, 3], all the same size (consumed lazily, so a generator
        rendering figures one by one keeps memory flat).
      path: "….mp4" or "….gif".
      fps: frames per second.
      quality: H.264 CRF (lower = better; 18–28 sensible). Ignored for GIF.
    Returns:
      The path. Nothing is written if ``frames`` raises or is empty.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise FlowlensError(
            f"path must end in .mp4 or .gif, got {str(path)!r}; rename it to choose the format."
        )
    if fps <= 0:
        raise FlowlensError(f"fps must be > 0, got {fps}.")
    with atomic_path(path) as tmp:
        count = _write_mp4(frames, tmp, fps, quality) if fmt == "mp4" else _write_gif(frames, tmp, fps)
        if count == 0:
            raise FlowlensError("frames is empty; a video needs at least one frame.")
    return path


def _frames(frames: Iterable[np.ndarray]):
    shape = None
    for i, f in enumerate(frames):
        f = check_image(f, f"frames[{i}]")
        if shape is None:
            shape = f.shape
        elif f.shape != shape:
            raise FlowlensError(
                f"all frames must have one size; frames[0] is {shape} but frames[{i}] is {f.shape}."
            )
        yield f


def _write_mp4(frames, tmp: Path, fps: float, quality: int) -> int:
    from fractions import Fraction

    import av

    count = 0
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = None
        for f in _frames(frames):
            h, w = f.shape[:2]
            if stream is None:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
                stream.width, stream.height = w + w % 2, h + h % 2
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(int(quality))}
            if w % 2 or h % 2:
                f = np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
            count += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return count


def _write_gif(frames, tmp: Path, fps: float) -> int:
    from PIL import Image

    images = [Image.fromarray(f) for f in _frames(frames)]
    if images:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=int(round(1000 / fps)),
            loop=0,
            optimize=False,
        )
    return len(images)


def _panel(fr, grid, segment, label, **kw) -> np.ndarray:
    """One camera's overlay for a video frame (frames narrower than MIN_WIDTH enlarged so text reads)."""
    if fr is not None and np.asarray(fr).shape[1] < MIN_WIDTH:
        k = -(-MIN_WIDTH // np.asarray(fr).shape[1])
        fr = np.repeat(np.repeat(check_image(fr), k, axis=0), k, axis=1)
    return overlay_frame(fr, grid, segment, label=label, **kw)


def side_by_side(panels: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """uint8 [max H, sum W + gaps, 3]: panels left to right on white, shorter ones padded below."""
    h = max(p.shape[0] for p in panels)
    parts = []
    for i, p in enumerate(panels):
        if i:
            parts.append(np.full((h, gap, 3), 255, np.uint8))
        parts.append(np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0)), constant_values=255))
    return np.concatenate(parts, axis=1)


def attention_video(
    frames: Sequence,
    scores: np.ndarray,
    layout: TokenLayout | Sequence[TokenLayout],
    path: str | os.PathLike,
    *,
    camera: str | int | None = 0,
    fps: float = 10.0,
    on: str = "frame",
    cmap: str = "inferno",
    alpha: float = 0.55,
    vmax: float | None = None,
    labels: Sequence[str] | None = None,
    value_label: str | None = "attention",
    smooth: bool = True,
) -> Path:
    """Overlay scores on each frame of an episode and write MP4/GIF.

    Args:
      frames: T frames: each uint8 [H, W, 3] of ``camera`` (one panel), or a {camera name: uint8
        [H, W, 3]} mapping: then every camera valid in the layout with an image in every frame is a
        panel, side by side, named in its corner; the cameras left out are named on the scale.
      scores: float [T, token] (one query, method, layer and step per frame).
      layout: one layout for all frames, or one per frame.
      camera: the camera of array frames (ignored for mappings).
      vmax: fixed upper colour limit (default: the max over the episode and cameras, so frames and
        cameras are comparable).
      labels: text per frame (default "frame t"), in the first panel's corner.
      value_label: name of the values, written on a colour scale added under every frame (None:
        no scale; the scale is fixed over the video, from its ``vmin`` to ``vmax``).
      smooth: bilinear heatmaps (False: one flat block per patch, the grid the model saw).
    Returns:
      The path.
    """
    scores = np.asarray(scores, dtype=np.float64)
    layouts = [layout] * len(frames) if isinstance(layout, TokenLayout) else list(layout)
    if scores.ndim != 2 or scores.shape[0] != len(frames) or len(layouts) != len(frames):
        raise FlowlensError(
            f"scores must be [frame, token] with one row per frame ({len(frames)}) and one layout per frame "
            f"(or one for all); got scores {scores.shape} and {len(layouts)} layouts."
        )
    multi = len(frames) > 0 and isinstance(frames[0], Mapping)
    if multi:
        names = [
            c.name
            for c in layouts[0].cameras
            if all(camera_segment(lay, c.name).valid for lay in layouts)
            and all(fr.get(c.name) is not None for fr in frames)
        ]
        if not names:
            raise FlowlensError(
                f"frames must hold an image of a camera the model saw in every frame; got cameras "
                f"{sorted(frames[0])} for layout cameras {[c.name for c in layouts[0].cameras]}."
            )
        absent = [short_camera(c.name) for c in layouts[0].cameras if c.name not in names]
        images = [[fr[n] for n in names] for fr in frames]
    else:
        names = [camera_segment(layouts[0], camera).name]
        absent = []
        images = [[fr] for fr in frames]
    grids = [[patch_grid(s, lay, n) for n in names] for s, lay in zip(scores, layouts, strict=True)]
    lo, hi = limits(np.stack([g.ravel() for gs in grids for g in gs]), None, vmax)
    labels = list(labels) if labels is not None else [f"frame {t}" for t in range(len(frames))]
    scale_label = value_label
    if value_label is not None and absent:
        scale_label = f"{value_label} · absent: {', '.join(absent)}"

    strip = None

    def render():
        nonlocal strip
        for t, (frs, gs, lay) in enumerate(zip(images, grids, layouts, strict=True)):
            panels = [
                _panel(
                    fr,
                    g,
                    camera_segment(lay, n),
                    short_camera(n) if k else labels[t] + (f" · {short_camera(n)}" if multi else ""),
                    on=on,
                    cmap=cmap,
                    alpha=alpha,
                    vmin=lo,
                    vmax=hi,
                    smooth=smooth,
                )
                for k, (fr, g, n) in enumerate(zip(frs, gs, names, strict=True))
            ]
            rgb = panels[0] if len(panels) == 1 else side_by_side(panels)
            if value_label is not None:
                if strip is None:
                    strip = colorbar_strip(rgb.shape[1], lo, hi, cmap=cmap, label=scale_label)
                rgb = np.concatenate([rgb, strip], axis=0)
            yield rgb

    return write_video(render(), path, fps=fps)
