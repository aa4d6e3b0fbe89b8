"""Rendering a tabletop frame: a fixed base camera and a wrist camera that moves with the gripper.

Both cameras look straight down at the table (orthographic). The base camera sees the whole
table in a 4:3 frame (``BASE_FRAME``, letterboxed by the model into its square input, so the
projection path is exercised); the wrist camera sees a square window centred on the gripper,
narrower when the gripper is low (``WRIST_FRAME``), with the two gripper fingers drawn on top.

Every frame is drawn together with an *id buffer*: uint8 [H, W] holding ``i + 1`` where object
``i`` is the visible (front-most) thing, ``GRIPPER_ID`` on the gripper and 0 elsewhere. Object
masks are exactly ``ids == i + 1``, so they match the drawn pixels, occlusion included.

Pixel coordinates are (row, col); boxes are (top, left, height, width), as in
:class:`~flowlens.core.frame.FrameTransform`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from flowlens.tasks.tabletop.scene import TABLE_SIZE, TableObject

BASE_FRAME = (144, 192)  # (height, width) of the base camera frame on disk
WRIST_FRAME = (96, 96)
GRIPPER_ID = 255
# half-width (table units) of the wrist camera's view at z = 0: wide, so the objects around the
# gripper are in view and their direction from it is their offset from the frame centre
WRIST_HALF_WIDTH = 0.55
TABLE_RGB = (196, 170, 128)
FLOOR_RGB = (90, 90, 96)
GRIPPER_RGB = (45, 45, 50)


@dataclasses.dataclass(frozen=True)
class Camera:
    """An orthographic top-down camera.

    Attributes:
      name: camera name (the model's camera key, e.g. "base_0_rgb").
      size: (height, width) of the frame in pixels.
      center: table point (x, y) at the frame centre.
      scale: pixels per table unit.
    """

    name: str
    size: tuple[int, int]
    center: tuple[float, float]
    scale: float

    def to_pixels(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Table (x, y) → frame (row, col), float; y grows upwards in the frame."""
        h, w = self.size
        col = w / 2 + (np.asarray(x, float) - self.center[0]) * self.scale
        row = h / 2 - (np.asarray(y, float) - self.center[1]) * self.scale
        return row, col


def base_camera() -> Camera:
    """The fixed base camera: the whole table in a 192×144 frame."""
    return Camera("base_0_rgb", BASE_FRAME, (TABLE_SIZE[0] / 2, TABLE_SIZE[1] / 2), 130.0)


def wrist_camera(x: float, y: float, z: float) -> Camera:
    """The wrist camera above gripper position (x, y, z): half-width ``WRIST_HALF_WIDTH + z``."""
    half = WRIST_HALF_WIDTH + max(float(z), 0.0)
    return Camera("left_wrist_0_rgb", WRIST_FRAME, (float(x), float(y)), WRIST_FRAME[1] / 2 / half)


def _mix(rgb, other, a: float) -> tuple[int, int, int]:
    return tuple(int(round((1 - a) * c + a * o)) for c, o in zip(rgb, other, strict=True))


class _Canvas:
    """Paints the same shapes into an RGB image and an id buffer."""

    def __init__(self, camera: Camera, table_rgb):
        h, w = camera.size
        self.camera = camera
        self.rgb = Image.new("RGB", (w, h), FLOOR_RGB)
        self.ids = Image.new("L", (w, h), 0)
        self.d_rgb, self.d_ids = ImageDraw.Draw(self.rgb), ImageDraw.Draw(self.ids)
        r0, c0 = camera.to_pixels(0.0, TABLE_SIZE[1])
        r1, c1 = camera.to_pixels(TABLE_SIZE[0], 0.0)
        self.d_rgb.rectangle([c0, r0, c1, r1], fill=tuple(table_rgb))

    def shape(self, kind: str, x: float, y: float, half: float, rgb, ident: int, dx: float = 0.0) -> None:
        """``kind`` 'disc' or 'square' of half-size ``half`` (table units) at (x, y)."""
        r, c = self.camera.to_pixels(x, y)
        hp = half * self.camera.scale
        c = c + dx * self.camera.scale
        box = [c - hp, r - hp, c + hp, r + hp]
        draw = "ellipse" if kind == "disc" else "rectangle"
        getattr(self.d_rgb, draw)(box, fill=tuple(rgb))
        if ident:
            getattr(self.d_ids, draw)(box, fill=ident)

    def rect(self, x: float, y: float, half_w: float, half_h: float, rgb, ident: int) -> None:
        r, c = self.camera.to_pixels(x, y)
        s = self.camera.scale
        box = [c - half_w * s, r - half_h * s, c + half_w * s, r + half_h * s]
        self.d_rgb.rectangle(box, fill=tuple(rgb))
        self.d_ids.rectangle(box, fill=ident)

    def pixel_rect(self, box, rgb, ident: int) -> None:
        self.d_rgb.rectangle(box, fill=tuple(rgb))
        self.d_ids.rectangle(box, fill=ident)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.rgb, dtype=np.uint8).copy(), np.asarray(self.ids, dtype=np.uint8).copy()


def draw_object(canvas: _Canvas, obj: TableObject, ident: int, lift: float = 0.0) -> None:
    """Draw one object (top view); ``lift`` > 0 (held object) draws it a little larger."""
    r = obj.radius * (1.0 + 0.6 * lift)
    rgb, x, y = obj.rgb, obj.x, obj.y
    if obj.kind == "plate":
        canvas.shape("disc", x, y, r, rgb, ident)
        canvas.shape("disc", x, y, 0.72 * r, _mix(rgb, (255, 255, 255), 0.45), ident)
    elif obj.kind == "bowl":
        canvas.shape("disc", x, y, r, rgb, ident)
        canvas.shape("disc", x, y, 0.62 * r, _mix(rgb, (0, 0, 0), 0.45), ident)
    elif obj.kind == "cube":
        canvas.shape("square", x, y, r, _mix(rgb, (0, 0, 0), 0.25), ident)
        canvas.shape("square", x, y, 0.7 * r, rgb, ident)
    elif obj.kind == "mug":
        canvas.rect(x + 1.05 * r, y, 0.45 * r, 0.28 * r, _mix(rgb, (0, 0, 0), 0.2), ident)
        canvas.shape("disc", x, y, r, rgb, ident)
        canvas.shape("disc", x, y, 0.55 * r, _mix(rgb, (0, 0, 0), 0.6), ident)
    else:  # pragma: no cover - TableObject kinds are validated by the scene sampler
        raise ValueError(obj.kind)


def render(
    camera: Camera,
    objects: Sequence[TableObject],
    gripper: Sequence[float],
    *,
    held: int | None = None,
    lift: float = 0.0,
    table_rgb=TABLE_RGB,
    draw_gripper: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one frame.

    Args:
      camera: the camera.
      objects: the objects at their current positions (index = object id).
      gripper: (x, y, z, closed) of the gripper; ``closed`` in [0, 1].
      held: id of the object in the gripper (drawn last, under the fingers), or None.
      lift: how high the held object is (0–1), drawn slightly larger.
      table_rgb: table colour (scenes vary it slightly).
      draw_gripper: draw the gripper (base camera: at its position; wrist camera: the fingers).

    Returns:
      (rgb uint8 [H, W, 3], ids uint8 [H, W]) with ids ``i + 1`` for object i, GRIPPER_ID for
      the gripper, 0 for table and floor.
    """
    canvas = _Canvas(camera, table_rgb)
    order = [i for i in range(len(objects)) if i != held] + ([held] if held is not None else [])
    for i in order:
        draw_object(canvas, objects[i], i + 1, lift if i == held else 0.0)
    if draw_gripper:
        gx, gy, gz, closed = (float(v) for v in gripper)
        if camera.name.startswith("base"):
            s = 1.0 + 1.5 * gz
            gap = (0.035 if closed > 0.5 else 0.075) * s
            for side in (-1, 1):
                canvas.rect(gx + side * gap, gy, 0.014 * s, 0.05 * s, GRIPPER_RGB, GRIPPER_ID)
            canvas.rect(gx, gy + 0.05 * s, gap + 0.014 * s, 0.012 * s, GRIPPER_RGB, GRIPPER_ID)
        else:
            h, w = camera.size
            gap = (0.09 if closed > 0.5 else 0.2) * w
            fw, fh = 0.07 * w, 0.28 * h
            for side in (-1, 1):
                c = w / 2 + side * gap
                canvas.pixel_rect([c - fw / 2, h - fh, c + fw / 2, h - 1], GRIPPER_RGB, GRIPPER_ID)
    return canvas.arrays()


def masks_from_ids(ids: np.ndarray, num_objects: int) -> np.ndarray:
    """bool [num_objects, H, W]: the visible pixels of each object."""
    return ids[None] == (np.arange(num_objects, dtype=np.uint8) + 1)[:, None, None]


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """float32 [N, 4] (top, left, height, width) bounding boxes; zeros for an invisible object."""
    out = np.zeros((masks.shape[0], 4), np.float32)
    for i, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if rows.size:
            out[i] = (rows[0], cols[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    return out
