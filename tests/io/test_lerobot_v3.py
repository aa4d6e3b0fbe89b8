"""LeRobot v3 datasets: episodes sliced out of shared parquet / MP4 files, frame-exact."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowlens.errors import FlowlensError
from flowlens.io.sources import list_episodes, open_episode, write_video
from flowlens.io.sources.lerobot_v3 import LeRobotV3EpisodeSource
from tests.io.test_io_sources import _png, smooth_frames

TASKS = ("pick up the bowl", "open the drawer")
LENGTHS = (5, 3, 4)
FILES = (0, 0, 1)  # episodes 0 and 1 share data file 0, episode 2 is in file 1


def make_v3(root, size=32):
    """The documented v3 layout: info.json, tasks.parquet, meta/episodes, shared data and video files."""
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    info = {
        "codebase_version": "v3.0", "fps": 10, "chunks_size": 1000, "total_episodes": len(LENGTHS),
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": {
            "observation.images.image": {"dtype": "video", "shape": [size, size, 3], "info": {"video.fps": 10}},
            "observation.images.wrist_image": {"dtype": "image", "shape": [size, size, 3]},
            "observation.state": {"dtype": "float32", "shape": [8]},
            "action": {"dtype": "float32", "shape": [7]},
        },
    }
    (root / "meta" / "info.json").write_text(json.dumps(info))
    # tasks.parquet as LeRobot writes it: the task string is the pandas index
    pd.DataFrame({"task_index": range(len(TASKS))}, index=pd.Index(TASKS, name=None)).to_parquet(
        root / "meta" / "tasks.parquet")
    base_all = smooth_frames(sum(LENGTHS), size, size, seed=7)
    write_video(root / "videos" / "observation.images.image" / "chunk-000" / "file-000.mp4", base_all,
                lossless=True)
    truth, rows, ep_rows, start, index = {}, {0: [], 1: []}, [], 0, 0
    img_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for e, (n, f) in enumerate(zip(LENGTHS, FILES, strict=True)):
        wrist = smooth_frames(n, size, size, seed=100 + e)
        truth[e] = (base_all[start:start + n], wrist)
        for i in np.random.default_rng(e).permutation(n):  # rows out of order inside the file
            rows[f].append({
                "observation.images.wrist_image": {"bytes": _png(wrist[i]), "path": None},
                "observation.state": np.full(8, 10 * e + i, np.float32).tolist(),
                "action": np.full(7, -i, np.float32).tolist(),
                "task_index": e % 2, "frame_index": int(i), "episode_index": e, "index": index + int(i),
                "timestamp": i / 10,
            })
        ep_rows.append({
            "episode_index": e, "tasks": [TASKS[e % 2]], "length": n, "data/chunk_index": 0, "data/file_index": f,
            "dataset_from_index": index, "dataset_to_index": index + n,
            "videos/observation.images.image/chunk_index": 0, "videos/observation.images.image/file_index": 0,
            "videos/observation.images.image/from_timestamp": start / 10,
            "videos/observation.images.image/to_timestamp": (start + n) / 10,
        })
        start += n
        index += n
    for f, r in rows.items():
        path = root / "data" / "chunk-000" / f"file-{f:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        cols = {k: [row[k] for row in r] for k in r[0]}
        cols["observation.images.wrist_image"] = pa.array(cols["observation.images.wrist_image"], img_type)
        pq.write_table(pa.table(cols), path)
    pq.write_table(pa.Table.from_pylist(ep_rows), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    return truth


def test_v3_episodes_are_read_frame_exactly(tmp_path):
    root = tmp_path / "ds"
    truth = make_v3(root)
    assert list_episodes(root) == [f"{root}#0", f"{root}#1", f"{root}#2"]
    for e, n in enumerate(LENGTHS):
        src = open_episode(f"{root}#{e}")
        assert isinstance(src, LeRobotV3EpisodeSource)
        assert (len(src), src.prompt, src.fps) == (n, TASKS[e % 2], 10.0)
        assert src.missing_cameras == ("right_wrist_0_rgb",)
        base, wrist = truth[e]
        for i in range(n):
            fr = src.frame(i)
            np.testing.assert_array_equal(fr.images["base_0_rgb"], base[i])
            np.testing.assert_array_equal(fr.images["left_wrist_0_rgb"], wrist[i])
            np.testing.assert_array_equal(fr.state, np.full(8, 10 * e + i, np.float32))
            np.testing.assert_array_equal(fr.actions, np.full(7, -i, np.float32))
        src.close()


def test_v3_errors(tmp_path):
    root = tmp_path / "ds"
    make_v3(root)
    with pytest.raises(FlowlensError, match=r"has 3 episodes \(0–2\); pass episode="):
        open_episode(root)
    with pytest.raises(FlowlensError, match="episode 7 is not in"):
        open_episode(root, episode=7)
    (root / "meta" / "episodes" / "chunk-000" / "file-000.parquet").unlink()
    with pytest.raises(FlowlensError, match="no meta/episodes/chunk-"):
        open_episode(root, episode=0)
