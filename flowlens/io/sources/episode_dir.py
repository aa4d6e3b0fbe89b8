"""The flowlens episode folder: one episode as MP4s + a JSON description (+ optional masks).

Layout (format version 1)::

    <episode>/episode.json     the description below
    <episode>/<camera>.mp4     one H.264 video per camera, named by the model camera (base_0_rgb, ...)
    <episode>/masks.npz        optional: per camera, uint8 [frame, height, width] object label images

``episode.json`` keys:

- ``format``: ``"flowlens-episode"``; ``format_version``: ``1``.
- ``name``: episode name; ``prompt``: the task instruction; ``fps``: frames per second;
  ``success``: true / false / null; ``num_frames``: frame count (every video has exactly this many).
- ``cameras``: object, model camera name → ``{"file": "<camera>.mp4", "size": [height, width],
  "transform": FrameTransform.to_dict() (stored frame → model input), "lossless": bool}``.
- ``missing_cameras``: model cameras not recorded (fed as zero images, masked).
- ``state``: list (per frame) of float lists, or null; ``actions``: the same for the recorded actions.
- ``objects``: list of object names; label ``k`` in ``masks.npz`` is ``objects[k - 1]`` (0 = none).
- ``boxes``: object, camera → object → list (per frame) of ``[top, left, height, width]`` in
  stored-frame pixels, or null where the object is not visible; ``{}`` when not recorded.
- ``masks``: ``"masks.npz"`` or null. Members are camera names (read with ``allow_pickle=False``).
- ``metadata``: free JSON (seed, scene parameters, ...).

``EpisodeWriter`` writes frame by frame into a temporary sibling folder and renames it into place
on ``close()``: an interrupted write never leaves a partial episode under the final name, and an
existing episode is only replaced with ``overwrite=True``. ``EpisodeDirSource`` reads it back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from flowlens.core.frame import FrameTransform
from flowlens.errors import FlowlensError
from flowlens.io.files import (
    apply_umask,
    check_format,
    check_name,
    dumps_json,
    inside,
    read_json,
    safe_name,
    write_json_atomic,
)
from flowlens.io.sources.base import MODEL_SIZE, EpisodeSource
from flowlens.io.sources.video import VideoReader, VideoWriter

EPISODE_MAGIC = "flowlens-episode"
EPISODE_VERSION = 1
MODEL_CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")


class EpisodeWriter:
    """Write a flowlens episode folder frame by frame.

    Args:
      path: the episode folder to create.
      prompt: the task instruction.
      cameras: model camera names recorded (each becomes ``<camera>.mp4``).
      fps: frames per second of the videos.
      transforms: camera → FrameTransform (stored frame → model input); default: no rotation,
        resize-with-pad to 224×224.
      objects: object names for ``boxes`` / label ``masks``.
      lossless: bit-exact RGB videos (libx264rgb) instead of yuv420p.
      overwrite: replace an existing episode folder at ``path``.
      metadata: free JSON stored in episode.json.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        prompt: str,
        cameras: Sequence[str] = ("base_0_rgb",),
        fps: float = 10.0,
        transforms: Mapping[str, FrameTransform] | None = None,
        objects: Sequence[str] = (),
        lossless: bool = False,
        overwrite: bool = False,
        metadata: dict | None = None,
    ):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FlowlensError(
                f"episode folder {str(self.path)!r} already exists; pass overwrite=True to "
                "replace it, or choose another path."
            )
        if not cameras:
            raise FlowlensError("cameras must name at least one camera, e.g. ('base_0_rgb',).")
        for cam in cameras:
            check_name("camera", cam)
        if not isinstance(prompt, str) or not prompt.strip():
            raise FlowlensError(f"prompt must be a non-empty string, got {prompt!r}.")
        self.overwrite = overwrite
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = apply_umask(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))
        self._desc = {
            "format": EPISODE_MAGIC,
            "format_version": EPISODE_VERSION,
            "name": safe_name(self.path.name, fallback="episode"),
            "prompt": prompt,
            "fps": float(fps),
            "metadata": dict(metadata or {}),
        }
        dumps_json(self._desc["metadata"], what="metadata")
        self.cameras = tuple(cameras)
        self.objects = tuple(objects)
        self._transforms = dict(transforms or {})
        unknown = set(self._transforms) - set(self.cameras)
        if unknown:
            raise FlowlensError(
                f"transforms names cameras {sorted(unknown)} not in cameras={list(self.cameras)}."
            )
        self._videos = {
            c: VideoWriter(self._tmp / f"{c}.mp4", fps=fps, lossless=lossless) for c in self.cameras
        }
        self._lossless = lossless
        self._sizes: dict[str, tuple[int, int]] = {}
        self._state: list = []
        self._actions: list = []
        self._boxes: dict[str, dict[str, list]] = {}
        self._masks: dict[str, list[np.ndarray]] = {}
        self.count = 0

    def add(
        self,
        images: Mapping[str, np.ndarray],
        *,
        state=None,
        action=None,
        boxes: Mapping[str, Mapping[str, Sequence[float] | None]] | None = None,
        masks: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Append one frame.

        Args:
          images: camera → uint8 [height, width, 3], one per recorded camera.
          state: float [state_dim] or None (then every frame must omit it).
          action: float [action_dim] or None (same rule).
          boxes: camera → object → (top, left, height, width) or None.
          masks: camera → uint8 [height, width] label image (0 = none, k = objects[k-1]).
        """
        # Validate everything first, so a rejected frame leaves the writer unchanged.
        if set(images) != set(self.cameras):
            raise FlowlensError(
                f"frame {self.count}: images must have exactly the cameras {list(self.cameras)}, "
                f"got {sorted(images)}."
            )
        images = {cam: np.asarray(images[cam]) for cam in self.cameras}
        for cam, img in images.items():
            size = self._sizes.get(cam, img.shape[:2])
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.shape[:2] != size:
                raise FlowlensError(
                    f"frame {self.count}: images[{cam!r}] must be uint8 [height, width, 3] of one size "
                    f"per camera ({size} so far), got {img.dtype} {img.shape}."
                )
        for name, value, store in (("state", state, self._state), ("action", action, self._actions)):
            if self.count > 0 and (value is None) != (not store):
                raise FlowlensError(
                    f"frame {self.count}: {name} given for some frames but not others; give it "
                    "for every frame or for none."
                )
        for cam, per_obj in (boxes or {}).items():
            for obj, box in per_obj.items():
                if cam not in self.cameras or obj not in self.objects:
                    raise FlowlensError(
                        f"boxes: camera {cam!r} / object {obj!r} not declared (cameras "
                        f"{list(self.cameras)}, objects {list(self.objects)})."
                    )
                if box is not None and len(box) != 4:
                    raise FlowlensError(
                        f"boxes[{cam!r}][{obj!r}] must be (top, left, height, width), got {box!r}."
                    )
        masks = {cam: np.asarray(m) for cam, m in (masks or {}).items()}
        for cam, mask in masks.items():
            if cam not in self.cameras or mask.shape != images[cam].shape[:2] or mask.dtype != np.uint8:
                raise FlowlensError(
                    f"masks[{cam!r}] must be uint8 [height, width] of a recorded camera's frame, "
                    f"got {mask.dtype} {mask.shape}."
                )
            if len(self._masks.get(cam, [])) != self.count:
                raise FlowlensError(
                    f"masks[{cam!r}] must be given for every frame (missing before frame {self.count})."
                )
        # Then record.
        for cam, img in images.items():
            self._videos[cam].write(img)
            self._sizes.setdefault(cam, img.shape[:2])
        for value, store in ((state, self._state), (action, self._actions)):
            if value is not None:
                store.append(np.asarray(value, dtype=np.float64).reshape(-1).tolist())
        for cam, per_obj in (boxes or {}).items():
            for obj, box in per_obj.items():
                track = self._boxes.setdefault(cam, {}).setdefault(obj, [])
                track.extend([None] * (self.count - len(track)))
                track.append(None if box is None else [float(x) for x in box])
        for cam, mask in masks.items():
            self._masks.setdefault(cam, []).append(mask)
        self.count += 1

    def close(self, *, success: bool | None = None) -> Path:
        """Finish the videos, write episode.json and move the folder into place."""
        if self.count == 0:
            self.abort()
            raise FlowlensError(f"no frames were added to episode {str(self.path)!r}.")
        for cam, track in self._masks.items():
            if len(track) != self.count:
                raise FlowlensError(f"masks[{cam!r}] has {len(track)} frames, the episode {self.count}.")
        for v in self._videos.values():
            v.close()
        for per_obj in self._boxes.values():
            for track in per_obj.values():
                track.extend([None] * (self.count - len(track)))
        cams = {}
        for cam in self.cameras:
            tf = self._transforms.get(cam) or FrameTransform(self._sizes[cam], MODEL_SIZE, False)
            if tf.frame_size != self._sizes[cam]:
                raise FlowlensError(
                    f"transforms[{cam!r}].frame_size is {tf.frame_size} but the frames are "
                    f"{self._sizes[cam]}."
                )
            cams[cam] = {
                "file": f"{cam}.mp4",
                "size": list(self._sizes[cam]),
                "transform": tf.to_dict(),
                "lossless": self._lossless,
            }
        if self._masks:
            with open(self._tmp / "masks.npz", "wb") as f:
                np.savez_compressed(f, **{c: np.stack(t) for c, t in self._masks.items()})
        self._desc.update(
            success=None if success is None else bool(success),
            num_frames=self.count,
            cameras=cams,
            missing_cameras=[c for c in MODEL_CAMERAS if c not in cams],
            state=self._state or None,
            actions=self._actions or None,
            objects=list(self.objects),
            boxes=self._boxes,
            masks="masks.npz" if self._masks else None,
        )
        write_json_atomic(self._tmp / "episode.json", self._desc)
        old = None
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
            os.replace(self.path, old)
        os.replace(self._tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        for v in self._videos.values():
            v.abort()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            self.abort()
        elif self._tmp.exists():
            self.close()


def write_episode(
    path: str | os.PathLike,
    images: Mapping[str, np.ndarray],
    *,
    prompt: str,
    fps: float = 10.0,
    success: bool | None = None,
    state=None,
    actions=None,
    boxes: Mapping[str, Mapping[str, Sequence]] | None = None,
    masks: Mapping[str, np.ndarray] | None = None,
    **writer_kwargs,
) -> Path:
    """Write a whole episode folder at once.

    Args:
      images: camera → uint8 [frame, height, width, 3].
      state, actions: float [frame, dim] or None.
      boxes: camera → object → per-frame (top, left, height, width) or None.
      masks: camera → uint8 [frame, height, width] label images.
      writer_kwargs: ``EpisodeWriter`` options (transforms, objects, lossless, overwrite, metadata).
    """
    cams = list(images)
    n = len(images[cams[0]])
    with EpisodeWriter(path, prompt=prompt, cameras=cams, fps=fps, **writer_kwargs) as w:
        for i in range(n):
            w.add(
                {c: images[c][i] for c in cams},
                state=None if state is None else state[i],
                action=None if actions is None else actions[i],
                boxes=None
                if boxes is None
                else {c: {o: t[i] for o, t in objs.items()} for c, objs in boxes.items()},
                masks=None if masks is None else {c: m[i] for c, m in masks.items()},
            )
        w.close(success=success)
    return Path(path)


class EpisodeDirSource(EpisodeSource):
    """Read a flowlens episode folder."""

    kind = "episode_dir"

    def __init__(self, path: str | os.PathLike, *, prompt: str | None = None, success: bool | None = None):
        self.path = Path(path)
        desc = read_json(self.path / "episode.json", what="episode description")
        check_format(
            desc, key="format", magic=EPISODE_MAGIC, version=EPISODE_VERSION, what="episode description",
            where=str(self.path / "episode.json"),
        )
        try:
            self.name = safe_name(desc.get("name") or self.path.name, fallback="episode")
            self._n = int(desc["num_frames"])
            self.fps = float(desc["fps"]) if desc.get("fps") else None
            self._prompt = prompt or desc.get("prompt")
            self.success = success if success is not None else desc.get("success")
            self.transforms, self._videos = {}, {}
            for cam, c in desc["cameras"].items():
                check_name("camera", cam)
                self.transforms[cam] = FrameTransform.from_dict(c["transform"])
                self._videos[cam] = VideoReader(inside(self.path, c["file"], what=f"video of camera {cam!r}"))
            self.missing_cameras = tuple(desc.get("missing_cameras", ()))
            self._state_rows = desc.get("state")
            self._action_rows = desc.get("actions")
            self.objects = tuple(desc.get("objects", ()))
            self._boxes = desc.get("boxes") or {}
            self._mask_file = (
                inside(self.path, desc["masks"], what="masks file") if desc.get("masks") else None
            )
            self.metadata = desc.get("metadata", {})
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, FlowlensError):
                raise
            raise FlowlensError(
                f"episode description {str(self.path / 'episode.json')!r} is malformed "
                f"({type(e).__name__}: {e})."
            ) from None
        self.orientation = "as written by the episode's producer; see each camera's transform"
        for cam, v in self._videos.items():
            if len(v) != self._n:
                raise FlowlensError(
                    f"episode {str(self.path)!r}: video of {cam!r} has {len(v)} frames but "
                    f"episode.json says num_frames={self._n}; the video is truncated or stale."
                )
        for key, rows in (("state", self._state_rows), ("actions", self._action_rows)):
            if rows is not None and len(rows) != self._n:
                raise FlowlensError(
                    f"episode {str(self.path)!r}: {key} has {len(rows)} rows, expected num_frames={self._n}."
                )
        self._masks = None

    def __len__(self) -> int:
        return self._n

    def _images(self, index: int) -> dict[str, np.ndarray]:
        return {cam: v.read(index) for cam, v in self._videos.items()}

    def _state(self, index: int) -> np.ndarray | None:
        return None if self._state_rows is None else np.asarray(self._state_rows[index], np.float32)

    def _actions(self, index: int) -> np.ndarray | None:
        return None if self._action_rows is None else np.asarray(self._action_rows[index], np.float32)

    def boxes(self, index: int) -> dict[str, dict[str, tuple[float, float, float, float] | None]]:
        """camera → object → (top, left, height, width) in stored-frame pixels (None: not visible)
        at frame ``index``."""
        i = self.check_index(index)
        return {
            cam: {obj: None if t[i] is None else tuple(t[i]) for obj, t in objs.items()}
            for cam, objs in self._boxes.items()
        }

    def masks(self, index: int) -> dict[str, np.ndarray]:
        """camera → uint8 [height, width] label image at frame ``index`` (empty dict if not recorded)."""
        i = self.check_index(index)
        if self._mask_file is None:
            return {}
        if self._masks is None:
            try:
                with np.load(self._mask_file, allow_pickle=False) as npz:
                    self._masks = {k: npz[k] for k in npz.files}
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
                raise FlowlensError(
                    f"masks file {str(self._mask_file)!r} is corrupt or missing ({e})."
                ) from None
        return {cam: m[i] for cam, m in self._masks.items()}

    def close(self) -> None:
        for v in self._videos.values():
            v.close()
