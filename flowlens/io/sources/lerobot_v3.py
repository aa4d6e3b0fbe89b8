"""One episode of a LeRobot v3 dataset: many episodes share each parquet / MP4 file.

Layout read (LeRobot ``codebase_version`` v3.x)::

    <root>/meta/info.json        fps, features, data_path / video_path templates
    <root>/meta/tasks.parquet    one row per task: the task string (column ``task``, or the
                                 pandas index ``__index_level_0__``) and ``task_index``
    <root>/meta/episodes/chunk-{c:03d}/file-{f:03d}.parquet   one row per episode:
        episode_index, tasks, length, data/chunk_index, data/file_index,
        dataset_from_index, dataset_to_index, videos/<key>/chunk_index, videos/<key>/file_index,
        videos/<key>/from_timestamp, videos/<key>/to_timestamp
    <root>/data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet   frames of many episodes
    <root>/videos/<key>/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4   likewise

An episode's rows are the rows of its data file whose ``episode_index`` is the episode's (ordered
by ``frame_index``); its video frames start at ``round(from_timestamp · fps)`` in its MP4.
Columns, cameras, orientation and prompts are as for v2 (:mod:`flowlens.io.sources.lerobot`):
the prompt is the episode's task string.

Example::

    src = LeRobotV3EpisodeSource("~/datasets/libero_v3", episode=12)
    src.frame(0).prompt, len(src)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from flowlens.core.frame import FrameTransform
from flowlens.errors import FlowlensError
from flowlens.io.files import read_json
from flowlens.io.sources.base import MODEL_SIZE
from flowlens.io.sources.lerobot import (
    ACTION_COLUMNS, STATE_COLUMNS, LeRobotEpisodeSource, _trusted_root, by_frame_index, choose_episode,
    lerobot_episodes, pick_cameras,
)
from flowlens.io.sources.video import VideoReader

DEFAULT_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DEFAULT_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


def lerobot_version(root: str | os.PathLike) -> str:
    """``codebase_version`` of a LeRobot dataset ("v2.1", "v3.0", ...)."""
    return str(read_json(Path(root) / "meta" / "info.json", what="LeRobot dataset info").get("codebase_version", ""))


def _read_table(path: Path, what: str, filters=None) -> dict[str, list]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise FlowlensError(f"{what} {str(path)!r} does not exist; is the dataset download complete?")
    try:
        return pq.read_table(path, filters=filters).to_pydict()
    except (pa.ArrowException, OSError) as e:
        raise FlowlensError(f"{what} {str(path)!r} is corrupt or truncated ({e}); download it again.") from None


def episode_table(root: str | os.PathLike) -> dict[int, dict]:
    """Episode index → its metadata row, from every ``meta/episodes/**/*.parquet`` of a v3 dataset."""
    files = sorted((Path(root) / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise FlowlensError(
            f"LeRobot dataset {str(root)!r} says codebase_version v3 but has no meta/episodes/chunk-*/file-*.parquet "
            "(v3's episode table). Is the download complete? A v2.x dataset (meta/episodes.jsonl) must say "
            "codebase_version v2.x in meta/info.json."
        )
    rows = {}
    for f in files:
        t = _read_table(f, "episode metadata file")
        for i in range(len(t.get("episode_index", []))):
            rows[int(t["episode_index"][i])] = {k: v[i] for k, v in t.items()}
    return rows


def lerobot_v3_episodes(root: str | os.PathLike) -> list[int]:
    return sorted(episode_table(root))


class _Clip:
    """Frames ``start, start+1, ...`` of a shared MP4 as one episode's frames 0, 1, ..."""

    def __init__(self, reader: VideoReader, start: int, length: int):
        self._reader, self._start, self._length = reader, start, length

    def __len__(self) -> int:
        return self._length

    def read(self, index: int) -> np.ndarray:
        return self._reader.read(self._start + index)

    def close(self) -> None:
        self._reader.close()


class LeRobotV3EpisodeSource(LeRobotEpisodeSource):
    """One episode of a LeRobot v3 dataset (a plain folder or a Hugging Face cache snapshot); ``kind``
    stays "lerobot", and reading frames is the v2 source's, over this episode's rows and clips."""

    def __init__(
        self,
        root: str | os.PathLike,
        episode: int | None = None,
        *,
        prompt: str | None = None,
        success: bool | None = None,
        columns: Mapping[str, str] | None = None,
        rotate180: bool = False,
    ):
        self.root = root = Path(root)
        info = read_json(root / "meta" / "info.json", what="LeRobot dataset info")
        episodes = episode_table(root)
        self.episode_index = choose_episode(root, episode, sorted(episodes))
        meta = episodes[self.episode_index]
        self._trusted = _trusted_root(root)
        rel = str(info.get("data_path", DEFAULT_DATA_PATH)).format(
            chunk_index=int(meta["data/chunk_index"]), file_index=int(meta["data/file_index"]))
        self.path = self._inside(rel, what="data_path")
        self.name = f"{root.name}_ep{self.episode_index:06d}"
        self.fps = float(info["fps"]) if info.get("fps") else None
        features = info.get("features", {})
        self._table = _read_table(self.path, "LeRobot data file", filters=[("episode_index", "=", self.episode_index)])
        self._table = by_frame_index(self._table)
        names = set(self._table)
        self._n = len(next(iter(self._table.values()))) if self._table else 0
        if self._n == 0:
            raise FlowlensError(f"LeRobot data file {str(self.path)!r} has no rows of episode {self.episode_index}.")
        columns = dict(columns or {})
        self._cameras = pick_cameras(names, features, columns, self.path)
        self._videos = {}
        for cam, col in self._cameras.items():
            if features.get(col, {}).get("dtype") == "video":
                vrel = str(info.get("video_path", DEFAULT_VIDEO_PATH)).format(
                    video_key=col, chunk_index=int(meta[f"videos/{col}/chunk_index"]),
                    file_index=int(meta[f"videos/{col}/file_index"]))
                fps = float(features[col].get("info", {}).get("video.fps", self.fps or 0) or self.fps)
                start = int(round(float(meta[f"videos/{col}/from_timestamp"]) * fps))
                self._videos[cam] = _Clip(VideoReader(self._inside(vrel, what="video_path")), start, self._n)
            elif col not in names:
                raise FlowlensError(f"column {col!r} for camera {cam!r} is not in {str(self.path)!r}; columns: "
                                    f"{sorted(names)}.")
        self._state_col = columns.get("state") or next((c for c in STATE_COLUMNS if c in names), None)
        self._action_col = columns.get("actions") or next((c for c in ACTION_COLUMNS if c in names), None)
        if prompt is None:
            prompt = self._task(root, meta)
        self._prompt = prompt
        self._prompt_hint = f"{root / 'meta' / 'tasks.parquet'} does not name this episode's task; pass prompt='...'"
        self.success = meta.get("success") if success is None else success
        self.transforms = {cam: FrameTransform(self._images(0)[cam].shape[:2], MODEL_SIZE, bool(rotate180))
                           for cam in self._cameras}
        self.missing_cameras = tuple(
            c for c in ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb") if c not in self._cameras)
        self.orientation = ("raw simulator render; the model saw it rotated 180°" if rotate180
                            else "openpi LIBERO convention: the raw render rotated 180° (as trained on)")

    def _task(self, root: Path, meta: Mapping) -> str | None:
        """The episode's task string: via task_index in tasks.parquet, else the episode's ``tasks``."""
        tasks_file = root / "meta" / "tasks.parquet"
        if "task_index" in self._table and tasks_file.is_file():
            t = _read_table(tasks_file, "LeRobot task list")
            text = t.get("task") or t.get("__index_level_0__")
            if text is not None and "task_index" in t:
                found = dict(zip((int(i) for i in t["task_index"]), text, strict=True))
                if int(self._table["task_index"][0]) in found:
                    return str(found[int(self._table["task_index"][0])])
        tasks = meta.get("tasks")
        return str(tasks[0]) if tasks else None


def lerobot_dataset_episodes(root: str | os.PathLike) -> list[int]:
    """Episode indices of a LeRobot dataset of either format (v3: its episode metadata; v2: ``lerobot_episodes``)."""
    return lerobot_v3_episodes(root) if lerobot_version(root).startswith("v3") else lerobot_episodes(root)


def open_lerobot(root: str | os.PathLike, episode: int | None = None, **kwargs) -> LeRobotEpisodeSource:
    """A LeRobot v2 or v3 episode source, chosen by the dataset's ``codebase_version``."""
    cls = LeRobotV3EpisodeSource if lerobot_version(root).startswith("v3") else LeRobotEpisodeSource
    return cls(root, episode, **kwargs)


__all__ = [
    "LeRobotV3EpisodeSource", "episode_table", "lerobot_dataset_episodes", "lerobot_v3_episodes", "lerobot_version",
    "open_lerobot",
]
