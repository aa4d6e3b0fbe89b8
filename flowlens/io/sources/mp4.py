"""MP4 rollout videos as episodes (openpi's LIBERO eval videos and the ``rollout_task<i>_ep<j>`` layout).

Recognised file names (prompt and outcome parsed from the name when not passed explicitly):

- ``rollout_<task words>_<success|failure>.mp4`` — openpi ``examples/libero/main.py``; words are
  joined by ``_`` (underscores become spaces in the prompt).
- ``rollout_<task words>_trial<N>_<success|failure>.mp4`` — forks that keep every trial.
- ``data/libero/<group>/videos/rollout_task<i>_ep<j>.mp4`` — the name carries only task and
  episode indices: pass ``prompt=`` or ``task_prompts={i: prompt}``.
- any other ``*.mp4`` — pass ``prompt=``.

openpi saves the **rotated 224×224 base image the model saw** (no wrist camera). So the frames
are the model input itself: ``base_0_rgb`` has an identity transform (a resize-with-pad only if
the file was re-encoded at another size), and ``left_wrist_0_rgb`` / ``right_wrist_0_rgb`` are
missing (the model gets zero images, masked). A video of the raw render instead is opened with
``rotate180=True``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from flowlens.core.frame import FrameTransform
from flowlens.io.files import safe_name
from flowlens.io.sources.base import MODEL_SIZE, EpisodeSource
from flowlens.io.sources.video import VideoReader

OPENPI_NAME = re.compile(r"^rollout_(?P<task>.+?)(?:_trial(?P<trial>\d+))?_(?P<outcome>success|failure)$")
TASK_EPISODE_NAME = re.compile(r"^rollout_task(?P<task>\d+)_ep(?P<episode>\d+)$")


def parse_rollout_name(name: str) -> dict:
    """Parse a rollout video file name (with or without ``.mp4``).

    Returns:
      dict with ``prompt`` (str or None), ``success`` (bool or None), ``trial``, ``task_index``,
      ``episode_index`` (int or None).

    >>> parse_rollout_name("rollout_put_the_bowl_on_the_plate_trial3_failure.mp4")["prompt"]
    'put the bowl on the plate'
    """
    stem = name[:-4] if name.lower().endswith(".mp4") else name
    out = {"prompt": None, "success": None, "trial": None, "task_index": None, "episode_index": None}
    if m := TASK_EPISODE_NAME.match(stem):
        out.update(task_index=int(m["task"]), episode_index=int(m["episode"]))
    elif m := OPENPI_NAME.match(stem):
        out.update(
            prompt=m["task"].replace("_", " ").strip(),
            success=m["outcome"] == "success",
            trial=int(m["trial"]) if m["trial"] else None,
        )
    return out


class Mp4RolloutSource(EpisodeSource):
    """One rollout video; a single camera (``base_0_rgb`` by default)."""

    kind = "mp4"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        prompt: str | None = None,
        success: bool | None = None,
        task_prompts: Mapping[int, str] | Sequence[str] | None = None,
        camera: str = "base_0_rgb",
        rotate180: bool = False,
        fps: float | None = None,
    ):
        self.path = Path(path)
        self._video = VideoReader(self.path)
        parsed = parse_rollout_name(self.path.name)
        task = parsed["task_index"]
        if prompt is None and task is not None and task_prompts is not None:
            try:
                prompt = task_prompts[task]
            except (KeyError, IndexError):
                prompt = None
        self._prompt = prompt if prompt is not None else parsed["prompt"]
        self._prompt_hint = (
            "the file name carries only task/episode indices; pass prompt='...' or "
            "task_prompts={task_index: '...'} to open_episode"
            if task is not None
            else "its name does not follow rollout_<task words>_<success|failure>.mp4; "
            "pass prompt='...' to open_episode"
        )
        self.success = success if success is not None else parsed["success"]
        self.trial, self.task_index, self.episode_index = parsed["trial"], task, parsed["episode_index"]
        group = self.path.parent.parent.name if self.path.parent.name == "videos" else ""
        self.name = safe_name(f"{group}_{self.path.stem}" if group else self.path.stem, fallback="video")
        self.fps = fps or self._video.fps
        self.camera = camera
        self.transforms = {camera: FrameTransform(self._video.size, MODEL_SIZE, bool(rotate180))}
        self.missing_cameras = tuple(
            c for c in ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb") if c != camera
        )
        self.orientation = (
            "raw simulator render; the model saw it rotated 180°"
            if rotate180
            else "the image the model saw (openpi: the raw render rotated 180°)"
        )

    def __len__(self) -> int:
        return len(self._video)

    def _images(self, index: int) -> dict[str, np.ndarray]:
        return {self.camera: self._video.read(index)}

    def close(self) -> None:
        self._video.close()
