"""One episode of a LeRobot v2 dataset (e.g. openpi's ``physical-intelligence/libero``).

Layout read (LeRobot ``codebase_version`` v2.x)::

    <root>/meta/info.json       fps, features, data_path / video_path templates, chunks_size
    <root>/meta/tasks.jsonl     {"task_index": i, "task": "<instruction>"} per line
    <root>/meta/episodes.jsonl  {"episode_index": e, "tasks": [...], "length": T} per line (optional)
    <root>/data/chunk-{c:03d}/episode_{e:06d}.parquet   one row per frame

Columns used (first name found wins; override with ``columns=``): camera images ``image`` /
``observation.images.image`` → ``base_0_rgb`` and ``wrist_image`` /
``observation.images.wrist_image`` / ``observation.images.image2`` → ``left_wrist_0_rgb``, as
embedded images (struct ``{bytes, path}`` holding PNG/JPEG bytes, or a ``path`` inside the
dataset) or ``video`` features (per-episode MP4 at ``video_path``); ``state`` /
``observation.state`` float32 [8]; ``actions`` / ``action`` float32 [7]; ``task_index`` (the
prompt, via ``tasks.jsonl``); ``frame_index`` (row order).

Orientation: openpi's LIBERO dataset stores 256×256 frames already rotated 180° from the raw
render — the convention the policies were trained on — so the model input is
``resize_with_pad(frame)`` with no rotation: transform ``FrameTransform((256, 256), (224, 224),
rotate180=False)``. Other LeRobot LIBERO exports differ (reference/landscape.md §4); pass
``rotate180=True`` for a dataset of raw renders. ``right_wrist_0_rgb`` is always missing (LIBERO
feeds a zero, masked image).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from flowlens.core.frame import FrameTransform
from flowlens.errors import FlowlensError
from flowlens.io.files import inside, read_json
from flowlens.io.sources.base import MODEL_SIZE, EpisodeSource
from flowlens.io.sources.video import VideoReader

CAMERA_COLUMNS = {
    "base_0_rgb": (
        "image",
        "observation.images.image",
        "observation.images.agentview",
        "observation.images.agentview_image",
    ),
    "left_wrist_0_rgb": (
        "wrist_image",
        "observation.images.wrist_image",
        "observation.images.image2",
        "observation.images.wrist",
    ),
}
STATE_COLUMNS = ("state", "observation.state")
ACTION_COLUMNS = ("actions", "action")
DEFAULT_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"


def read_jsonl(path: Path, *, what: str) -> list[dict]:
    """Read a JSON-lines file; FlowlensError naming the file and line on bad JSON."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FlowlensError(f"{what} {str(path)!r} cannot be read ({e}).") from None
    for i, line in enumerate(lines):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise FlowlensError(f"{what} {str(path)!r}, line {i + 1}: invalid JSON ({e}).") from None
    return rows


def is_lerobot_root(path: Path) -> bool:
    return (path / "meta" / "info.json").is_file()


def lerobot_episodes(root: str | os.PathLike) -> list[int]:
    """Episode indices of a LeRobot v2 dataset (episodes.jsonl, else 0..total_episodes-1); for either
    format use ``flowlens.io.sources.lerobot_v3.lerobot_dataset_episodes``."""
    root = Path(root)
    info = _read_info(root)
    ep_file = root / "meta" / "episodes.jsonl"
    if ep_file.is_file():
        return sorted(int(e["episode_index"]) for e in read_jsonl(ep_file, what="episode list"))
    return list(range(int(info.get("total_episodes", 0))))


def _read_info(root: Path) -> dict:
    info = read_json(root / "meta" / "info.json", what="LeRobot dataset info")
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v2"):
        raise FlowlensError(
            f"LeRobot dataset {str(root)!r} has codebase_version {version!r}; this reader takes v2.x (one "
            "parquet file per episode). Open it with open_episode (v3.x: LeRobotV3EpisodeSource)."
        )
    return info


def _trusted_root(root: Path) -> Path:
    """The folder a dataset's files (after following links) must lie in: the dataset folder, or
    for a Hugging Face hub cache snapshot (``<cache>/snapshots/<revision>``, files linked into
    ``<cache>/blobs/``) the cache folder ``<cache>`` of that one dataset."""
    real = root.resolve()
    if real.parent.name == "snapshots" and (real.parent.parent / "blobs").is_dir():
        return real.parent.parent
    return root


class LeRobotEpisodeSource(EpisodeSource):
    """One episode of a LeRobot v2 dataset (a plain folder or a Hugging Face cache snapshot, whose
    files are links into the dataset's ``blobs/``; links leaving that cache folder are refused)."""

    kind = "lerobot"

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
        info = _read_info(root)
        self.episode_index = choose_episode(root, episode, lerobot_episodes(root))
        chunk = self.episode_index // int(info.get("chunks_size", 1000))
        rel = str(info.get("data_path", DEFAULT_DATA_PATH)).format(
            episode_chunk=chunk, episode_index=self.episode_index
        )
        self._trusted = _trusted_root(root)
        self.path = self._inside(rel, what="data_path")
        self.name = f"{root.name}_ep{self.episode_index:06d}"
        self.fps = float(info["fps"]) if info.get("fps") else None
        features = info.get("features", {})
        self._table = _read_parquet(self.path)
        self._table = by_frame_index(self._table)
        names = set(self._table)
        self._n = len(next(iter(self._table.values()))) if self._table else 0
        columns = dict(columns or {})
        self._cameras = pick_cameras(names, features, columns, self.path)
        self._videos = {}
        for cam, col in self._cameras.items():
            if features.get(col, {}).get("dtype") == "video":
                vrel = str(info["video_path"]).format(
                    episode_chunk=chunk, video_key=col, episode_index=self.episode_index
                )
                self._videos[cam] = VideoReader(self._inside(vrel, what="video_path"))
                self._n = self._n or len(self._videos[cam])
            elif col not in names:
                raise FlowlensError(
                    f"column {col!r} for camera {cam!r} is not in {str(self.path)!r}; columns: "
                    f"{sorted(names)}."
                )
        if self._n == 0:
            raise FlowlensError(f"LeRobot episode {str(self.path)!r} has no frames.")
        self._state_col = columns.get("state") or next((c for c in STATE_COLUMNS if c in names), None)
        self._action_col = columns.get("actions") or next((c for c in ACTION_COLUMNS if c in names), None)
        # prompt: explicit, else tasks.jsonl via task_index
        if prompt is None and "task_index" in names:
            tasks_file = root / "meta" / "tasks.jsonl"
            if tasks_file.is_file():
                tasks = {int(t["task_index"]): t["task"] for t in read_jsonl(tasks_file, what="task list")}
                prompt = tasks.get(int(self._table["task_index"][0]))
        self._prompt = prompt
        self._prompt_hint = (
            f"{root / 'meta' / 'tasks.jsonl'} does not name the task_index of this episode; "
            "pass prompt='...' to open_episode"
        )
        if success is None:
            ep_file = root / "meta" / "episodes.jsonl"
            if ep_file.is_file():
                meta = next(
                    (
                        e
                        for e in read_jsonl(ep_file, what="episode list")
                        if int(e["episode_index"]) == self.episode_index
                    ),
                    {},
                )
                success = meta.get("success")
        self.success = success
        self.transforms = {
            cam: FrameTransform(self._images(0)[cam].shape[:2], MODEL_SIZE, bool(rotate180))
            for cam in self._cameras
        }
        self.missing_cameras = tuple(
            c for c in ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb") if c not in self._cameras
        )
        self.orientation = (
            "raw simulator render; the model saw it rotated 180°"
            if rotate180
            else "openpi LIBERO convention: the raw render rotated 180° (as trained on)"
        )

    def __len__(self) -> int:
        return self._n

    def _images(self, index: int) -> dict[str, np.ndarray]:
        out = {}
        for cam, col in self._cameras.items():
            if cam in self._videos:
                out[cam] = self._videos[cam].read(index)
            else:
                out[cam] = self._decode(self._table[col][index], col, index)
        return out

    def _inside(self, rel: str, *, what: str) -> Path:
        """``self.root / rel`` resolved; FlowlensError when it (or a link on the way) leaves the
        trusted root (see ``_trusted_root``)."""
        if self._trusted == self.root:
            return inside(self.root, rel, what=what)
        return inside(self._trusted, os.path.relpath(self.root.resolve() / rel, self._trusted), what=what)

    def _decode(self, cell, column: str, index: int) -> np.ndarray:
        data = cell
        if isinstance(cell, dict):
            data = cell.get("bytes")
            if data is None and cell.get("path"):
                file = self._inside(cell["path"], what=f"image path in column {column!r}")
                if not file.is_file():
                    raise FlowlensError(
                        f"frame {index}, column {column!r} of {str(self.path)!r} refers to "
                        f"{str(file)!r}, which does not exist."
                    )
                data = file.read_bytes()
        if not isinstance(data, (bytes, bytearray)):
            raise FlowlensError(
                f"frame {index}, column {column!r} of {str(self.path)!r} holds "
                f"{type(cell).__name__}, expected an embedded image {{bytes, path}}."
            )
        try:
            with Image.open(io.BytesIO(data)) as im:
                return np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise FlowlensError(
                f"frame {index}, column {column!r} of {str(self.path)!r}: the embedded image "
                f"cannot be decoded ({e}); the dataset file is corrupt."
            ) from None

    def _vector(self, col: str | None, index: int) -> np.ndarray | None:
        if col is None:
            return None
        return np.asarray(self._table[col][index], dtype=np.float32)

    def _state(self, index: int) -> np.ndarray | None:
        return self._vector(self._state_col, index)

    def _actions(self, index: int) -> np.ndarray | None:
        return self._vector(self._action_col, index)

    def close(self) -> None:
        for v in self._videos.values():
            v.close()


def choose_episode(root: Path, episode: int | None, episodes: list[int]) -> int:
    """``episode`` checked against a dataset's episode list (None: its only episode)."""
    if episode is None:
        if len(episodes) != 1:
            raise FlowlensError(
                f"LeRobot dataset {str(root)!r} has {len(episodes)} episodes "
                f"({_ranges(episodes)}); pass episode=<index> (or open '<root>#<index>')."
            )
        episode = episodes[0]
    if episode not in episodes:
        raise FlowlensError(
            f"episode {episode} is not in LeRobot dataset {str(root)!r}; it has episodes "
            f"{_ranges(episodes)}."
        )
    return int(episode)


def by_frame_index(table: dict[str, list]) -> dict[str, list]:
    """A column dict with its rows in ``frame_index`` order (unchanged without that column)."""
    if "frame_index" not in table:
        return table
    order = np.argsort(np.asarray(table["frame_index"]), kind="stable")
    return {k: [v[i] for i in order] for k, v in table.items()}


def pick_cameras(names: set[str], features: Mapping, columns: Mapping[str, str], where: Path) -> dict[str, str]:
    """Camera name → column (an explicit ``columns`` entry, else the first known name present)."""
    cameras: dict[str, str] = {}
    for cam, candidates in CAMERA_COLUMNS.items():
        col = columns.get(cam) or next(
            (c for c in candidates if c in names or features.get(c, {}).get("dtype") == "video"), None
        )
        if col is not None:
            cameras[cam] = col
    if not cameras:
        raise FlowlensError(
            f"LeRobot episode {str(where)!r} has no camera column; looked for "
            f"{[c for cs in CAMERA_COLUMNS.values() for c in cs]}, found columns {sorted(names)}. "
            "Pass columns={'base_0_rgb': '<column>'}."
        )
    return cameras


def _read_parquet(path: Path) -> dict[str, list]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise FlowlensError(
            f"LeRobot episode file {str(path)!r} does not exist; is the dataset download complete?"
        )
    try:
        return pq.read_table(path).to_pydict()
    except (pa.ArrowException, OSError) as e:
        raise FlowlensError(
            f"LeRobot episode file {str(path)!r} is corrupt or truncated ({e}); download it again."
        ) from None


def _ranges(values: list[int]) -> str:
    if not values:
        return "none"
    if values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}–{values[-1]}"
    return ", ".join(map(str, values[:10])) + (" ..." if len(values) > 10 else "")
