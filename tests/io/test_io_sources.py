import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from flowlens.core.frame import FrameTransform
from flowlens.errors import FlowlensError
from flowlens.io.sources import (
    EpisodeWriter,
    list_episodes,
    open_episode,
    parse_rollout_name,
    to_model_input,
    write_episode,
    write_video,
)


def smooth_frames(n, h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        c = rng.integers(0, 200, 3)
        img = (c[None, None, :] + (yy[..., None] * 40 // h) + (xx[..., None] * 15 // w) + i).clip(0, 255)
        out.append(img.astype(np.uint8))
    return np.stack(out)


# ---- MP4 rollouts ---------------------------------------------------------------------------
def test_parse_rollout_names():
    assert parse_rollout_name("rollout_pick_up_the_black_bowl_success.mp4") == {
        "prompt": "pick up the black bowl",
        "success": True,
        "trial": None,
        "task_index": None,
        "episode_index": None,
    }
    p = parse_rollout_name("rollout_put_it_in_the_basket_trial12_failure")
    assert (p["prompt"], p["success"], p["trial"]) == ("put it in the basket", False, 12)
    p = parse_rollout_name("rollout_task3_ep7.mp4")
    assert (p["prompt"], p["task_index"], p["episode_index"]) == (None, 3, 7)
    assert parse_rollout_name("my_video.mp4")["prompt"] is None


def test_openpi_rollout_video(tmp_path):
    frames = smooth_frames(6, 224, 224)
    path = write_video(
        tmp_path / "rollout_put_the_bowl_on_the_plate_trial3_success.mp4", frames, lossless=True
    )
    src = open_episode(path)
    assert (src.kind, len(src), src.prompt, src.success, src.trial) == (
        "mp4",
        6,
        "put the bowl on the plate",
        True,
        3,
    )
    assert src.transforms == {"base_0_rgb": FrameTransform((224, 224), (224, 224), False)}
    assert src.transforms["base_0_rgb"].is_identity
    assert src.missing_cameras == ("left_wrist_0_rgb", "right_wrist_0_rgb")
    for i in (3, 1, 5, -1):  # forward, backward, end, negative
        np.testing.assert_array_equal(src.frame(i).images["base_0_rgb"], frames[i % 6])
    images, mask = src.frame(2).model_inputs()
    assert mask == {"base_0_rgb": True, "left_wrist_0_rgb": False, "right_wrist_0_rgb": False}
    np.testing.assert_array_equal(images["base_0_rgb"], frames[2])
    assert not images["left_wrist_0_rgb"].any() and images["right_wrist_0_rgb"].shape == (224, 224, 3)
    assert src.fps == pytest.approx(10.0)
    with pytest.raises(FlowlensError, match=r"frame 6 out of range.*6 frames \(valid: 0–5"):
        src.frame(6)
    assert open_episode(path, prompt="other", success=False).prompt == "other"


def test_lossy_video_is_close(tmp_path):
    frames = smooth_frames(4, 64, 48)
    src = open_episode(write_video(tmp_path / "rollout_x_failure.mp4", frames), success=None)
    assert src.success is False
    assert np.abs(src.frame(1).images["base_0_rgb"].astype(int) - frames[1]).mean() < 3
    assert src.transforms["base_0_rgb"].frame_size == (64, 48)


def test_task_episode_layout_needs_prompt(tmp_path):
    d = tmp_path / "data" / "libero" / "libero_spatial" / "videos"
    path = write_video(d / "rollout_task3_ep2.mp4", smooth_frames(2, 32, 32))
    src = open_episode(path)
    assert src.name == "libero_spatial_rollout_task3_ep2" and src.success is None
    np.testing.assert_array_equal(src.images(0)["base_0_rgb"].shape, (32, 32, 3))
    with pytest.raises(FlowlensError, match=r"task_prompts=\{task_index"):
        src.frame(0)
    src2 = open_episode(path, task_prompts={3: "open the drawer"})
    assert src2.frame(1).prompt == "open the drawer"
    assert list_episodes(tmp_path / "data") == [str(path)]


def test_broken_videos(tmp_path):
    with pytest.raises(FlowlensError, match="does not exist"):
        open_episode(tmp_path / "rollout_a_success.mp4")
    good = write_video(tmp_path / "rollout_a_success.mp4", smooth_frames(5, 32, 32))
    data = good.read_bytes()
    cut = tmp_path / "rollout_b_success.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(FlowlensError, match=r"rollout_b_success\.mp4.*(corrupt|truncated)"):
        src = open_episode(cut)
        for i in range(len(src)):
            src.frame(i)
    junk = tmp_path / "rollout_c_success.mp4"
    junk.write_bytes(b"not a video" * 50)
    with pytest.raises(FlowlensError, match="cannot be decoded"):
        open_episode(junk)
    assert good.read_bytes() == data


def test_to_model_input():
    img = np.zeros((256, 128, 3), np.uint8)
    img[:10] = 255  # top rows white
    tf = FrameTransform((256, 128), (224, 224), rotate180=True)
    out = to_model_input(img, tf)
    assert out.shape == (224, 224, 3)
    top, left, h, w = tf.content_box
    assert (top, left, h, w) == (0, 56, 224, 112)
    assert out[:, :left].max() == 0  # letterbox padding
    assert out[-3:, left + 5 : left + w - 5].min() == 255  # rotated: white now at the bottom
    with pytest.raises(FlowlensError, match="frame_size"):
        to_model_input(np.zeros((10, 10, 3), np.uint8), tf)


# ---- LeRobot v2 -----------------------------------------------------------------------------
def _png(img, fmt="PNG"):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return buf.getvalue()


def make_lerobot(root, *, episodes=(5, 3), size=64, tasks=("pick up the bowl", "open the drawer")):
    (root / "meta").mkdir(parents=True)
    info = {
        "codebase_version": "v2.0",
        "fps": 10,
        "chunks_size": 1000,
        "total_episodes": len(episodes),
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "features": {
            "image": {"dtype": "image", "shape": [size, size, 3]},
            "wrist_image": {"dtype": "image", "shape": [size, size, 3]},
            "state": {"dtype": "float32", "shape": [8]},
            "actions": {"dtype": "float32", "shape": [7]},
        },
    }
    (root / "meta" / "info.json").write_text(json.dumps(info))
    (root / "meta" / "tasks.jsonl").write_text(
        "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(tasks))
    )
    (root / "meta" / "episodes.jsonl").write_text(
        "".join(
            json.dumps({"episode_index": e, "tasks": [tasks[e % len(tasks)]], "length": n}) + "\n"
            for e, n in enumerate(episodes)
        )
    )
    data = {}
    img_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for e, n in enumerate(episodes):
        base = smooth_frames(n, size, size, seed=e)
        wrist = smooth_frames(n, size, size, seed=100 + e)
        order = np.random.default_rng(e).permutation(n)  # rows stored out of order
        table = pa.table(
            {
                "image": pa.array([{"bytes": _png(base[i]), "path": None} for i in order], img_type),
                "wrist_image": pa.array(
                    [{"bytes": _png(wrist[i], "JPEG"), "path": None} for i in order], img_type
                ),
                "state": pa.array(
                    [np.full(8, i, np.float32).tolist() for i in order], pa.list_(pa.float32(), 8)
                ),
                "actions": pa.array(
                    [np.full(7, -i, np.float32).tolist() for i in order], pa.list_(pa.float32(), 7)
                ),
                "task_index": pa.array([e % len(tasks)] * n, pa.int64()),
                "frame_index": pa.array(order, pa.int64()),
                "episode_index": pa.array([e] * n, pa.int64()),
            }
        )
        path = root / "data" / "chunk-000" / f"episode_{e:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        data[e] = (base, wrist)
    return data


def test_lerobot_episode(tmp_path):
    root = tmp_path / "libero"
    data = make_lerobot(root)
    for spec, kw in (
        (root, {"episode": 1}),
        (f"{root}#1", {}),
        (root / "data" / "chunk-000" / "episode_000001.parquet", {}),
    ):
        src = open_episode(spec, **kw)
        assert (src.kind, len(src), src.prompt, src.name) == (
            "lerobot",
            3,
            "open the drawer",
            "libero_ep000001",
        )
    f = src.frame(2)
    np.testing.assert_array_equal(f.images["base_0_rgb"], data[1][0][2])
    assert np.abs(f.images["left_wrist_0_rgb"].astype(int) - data[1][1][2]).mean() < 4  # JPEG
    np.testing.assert_array_equal(f.state, np.full(8, 2, np.float32))
    np.testing.assert_array_equal(f.actions, np.full(7, -2, np.float32))
    assert f.transforms["base_0_rgb"] == FrameTransform((64, 64), (224, 224), rotate180=False)
    assert f.missing_cameras == ("right_wrist_0_rgb",)
    assert f.timestamp == pytest.approx(0.2)
    images, mask = f.model_inputs()
    assert images["base_0_rgb"].shape == (224, 224, 3) and mask["right_wrist_0_rgb"] is False
    assert list_episodes(root) == [f"{root}#0", f"{root}#1"]
    assert open_episode(root, episode=0, rotate180=True).transforms["base_0_rgb"].rotate180


def test_lerobot_errors(tmp_path):
    root = tmp_path / "libero"
    make_lerobot(root)
    with pytest.raises(FlowlensError, match=r"2 episodes \(0–1\); pass episode="):
        open_episode(root)
    with pytest.raises(FlowlensError, match="episode 7 is not in"):
        open_episode(root, episode=7)
    ep0 = root / "data" / "chunk-000" / "episode_000000.parquet"
    good = ep0.read_bytes()
    ep0.write_bytes(good[: len(good) // 2])
    with pytest.raises(FlowlensError, match=r"episode_000000\.parquet.*corrupt or truncated"):
        open_episode(root, episode=0)
    ep0.unlink()
    with pytest.raises(FlowlensError, match="does not exist"):
        open_episode(root, episode=0)
    (root / "meta" / "tasks.jsonl").unlink()
    src = open_episode(root, episode=1)
    with pytest.raises(FlowlensError, match="pass prompt="):
        src.prompt  # noqa: B018
    assert open_episode(root, episode=1, prompt="do it").frame(0).prompt == "do it"
    info = json.loads((root / "meta" / "info.json").read_text())
    (root / "meta" / "info.json").write_text(json.dumps({**info, "codebase_version": "v3.0"}))
    with pytest.raises(FlowlensError, match="v2.x"):
        open_episode(root, episode=1)


def test_lerobot_corrupt_image_names_frame(tmp_path):
    root = tmp_path / "ds"
    make_lerobot(root, episodes=(3,))
    path = root / "data" / "chunk-000" / "episode_000000.parquet"
    t = pq.read_table(path).to_pydict()
    row = t["frame_index"].index(2)
    t["image"][row] = {"bytes": b"\x89PNG broken", "path": None}
    bad_frame = 2
    pq.write_table(pa.table(t), path)
    src = open_episode(root)
    with pytest.raises(FlowlensError, match=rf"frame {bad_frame}, column 'image'.*cannot be decoded"):
        src.frame(bad_frame)


def test_lerobot_image_path_cannot_escape(tmp_path):
    root = tmp_path / "ds"
    make_lerobot(root, episodes=(2,))
    path = root / "data" / "chunk-000" / "episode_000000.parquet"
    t = pq.read_table(path).to_pydict()
    t["image"] = [{"bytes": None, "path": "../../etc/passwd"}] * 2
    pq.write_table(pa.table(t), path)
    with pytest.raises(FlowlensError, match="outside"):
        open_episode(root)


# ---- flowlens episode folder ----------------------------------------------------------------
def test_episode_dir_round_trip(tmp_path):
    n = 5
    base, wrist = smooth_frames(n, 48, 64), smooth_frames(n, 32, 32, seed=3)
    masks = np.zeros((n, 48, 64), np.uint8)
    masks[:, 10:20, 5:15] = 1
    boxes = {"base_0_rgb": {"bowl": [(10, 5, 10, 10)] * 4 + [None]}}
    path = write_episode(
        tmp_path / "ep0",
        {"base_0_rgb": base, "left_wrist_0_rgb": wrist},
        prompt="pick the bowl",
        fps=5,
        success=True,
        state=np.arange(n * 8).reshape(n, 8),
        actions=np.ones((n, 7)),
        boxes=boxes,
        masks={"base_0_rgb": masks},
        objects=("bowl",),
        lossless=True,
        metadata={"seed": 1},
        transforms={"base_0_rgb": FrameTransform((48, 64), (224, 224), True)},
    )
    src = open_episode(path)
    assert (src.kind, len(src), src.prompt, src.success, src.fps) == (
        "episode_dir",
        n,
        "pick the bowl",
        True,
        5.0,
    )
    assert src.missing_cameras == ("right_wrist_0_rgb",)
    assert src.transforms["base_0_rgb"].rotate180 and not src.transforms["left_wrist_0_rgb"].rotate180
    f = src.frame(3)
    np.testing.assert_array_equal(f.images["base_0_rgb"], base[3])
    np.testing.assert_array_equal(f.images["left_wrist_0_rgb"], wrist[3])
    np.testing.assert_array_equal(f.state, np.arange(24, 32, dtype=np.float32))
    assert src.boxes(4) == {"base_0_rgb": {"bowl": None}} and src.boxes(0)["base_0_rgb"]["bowl"] == (
        10,
        5,
        10,
        10,
    )
    np.testing.assert_array_equal(src.masks(2)["base_0_rgb"], masks[2])
    assert src.metadata == {"seed": 1} and src.objects == ("bowl",)
    assert [p.name for p in tmp_path.iterdir()] == ["ep0"]


def test_episode_writer_is_atomic_and_refuses_overwrite(tmp_path):
    write_episode(tmp_path / "ep", {"base_0_rgb": smooth_frames(2, 16, 16)}, prompt="a")
    before = sorted(p.name for p in (tmp_path / "ep").iterdir())
    with pytest.raises(FlowlensError, match="already exists"):
        EpisodeWriter(tmp_path / "ep", prompt="b")
    with pytest.raises(RuntimeError), EpisodeWriter(tmp_path / "ep2", prompt="b") as w:
        w.add({"base_0_rgb": smooth_frames(1, 16, 16)[0]})
        raise RuntimeError("producer crashed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep"]  # nothing half-written
    with (
        pytest.raises(FlowlensError, match="exactly the cameras"),
        EpisodeWriter(tmp_path / "ep3", prompt="b") as w,
    ):
        w.add({"wrist": smooth_frames(1, 16, 16)[0]})
    with EpisodeWriter(tmp_path / "ep5", prompt="b") as w:
        w.add({"base_0_rgb": smooth_frames(1, 16, 16)[0]}, state=[1.0])
        with pytest.raises(FlowlensError, match="one size"):
            w.add({"base_0_rgb": smooth_frames(1, 8, 8)[0]}, state=[2.0])
        with pytest.raises(FlowlensError, match="some frames but not others"):
            w.add({"base_0_rgb": smooth_frames(1, 16, 16)[0]})
        w.add({"base_0_rgb": smooth_frames(1, 16, 16)[0]}, state=[3.0])  # rejected frames left no trace
    assert [f.state.tolist() for f in open_episode(tmp_path / "ep5")] == [[1.0], [3.0]]
    with pytest.raises(FlowlensError, match="camera must be"):
        EpisodeWriter(tmp_path / "ep4", prompt="b", cameras=("../x",))
    write_episode(tmp_path / "ep", {"base_0_rgb": smooth_frames(3, 16, 16)}, prompt="new", overwrite=True)
    assert len(open_episode(tmp_path / "ep")) == 3 and before == ["base_0_rgb.mp4", "episode.json"]


def test_episode_dir_damage(tmp_path):
    path = write_episode(tmp_path / "ep", {"base_0_rgb": smooth_frames(4, 16, 16)}, prompt="a")
    desc = json.loads((path / "episode.json").read_text())
    (path / "episode.json").write_text(json.dumps({**desc, "num_frames": 9}))
    with pytest.raises(FlowlensError, match="has 4 frames but episode.json says num_frames=9"):
        open_episode(path)
    (path / "episode.json").write_text(
        json.dumps(
            {**desc, "cameras": {"base_0_rgb": {**desc["cameras"]["base_0_rgb"], "file": "../../x.mp4"}}}
        )
    )
    with pytest.raises(FlowlensError, match="outside"):
        open_episode(path)
    (path / "episode.json").write_text(json.dumps({**desc, "format_version": 2}))
    with pytest.raises(FlowlensError, match=r"episode description .* has format_version 2; .* reads 1\.\.1"):
        open_episode(path)
    (path / "episode.json").write_text(json.dumps({**desc, "format": "other"}))
    with pytest.raises(FlowlensError, match="is not a flowlens episode description \\(format 'other'"):
        open_episode(path)
    (path / "episode.json").write_text(json.dumps(desc)[:40])
    with pytest.raises(FlowlensError, match="not valid JSON"):
        open_episode(path)


def test_open_episode_errors_and_listing(tmp_path):
    with pytest.raises(FlowlensError, match="does not exist"):
        open_episode(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlowlensError, match="neither a flowlens episode"):
        open_episode(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FlowlensError, match="cannot tell"):
        open_episode(tmp_path / "notes.txt")
    write_episode(tmp_path / "all" / "b_ep", {"base_0_rgb": smooth_frames(1, 16, 16)}, prompt="a")
    write_video(tmp_path / "all" / "a" / "rollout_x_success.mp4", smooth_frames(1, 16, 16))
    assert list_episodes(tmp_path / "all") == [
        str(tmp_path / "all" / "a" / "rollout_x_success.mp4"),
        str(tmp_path / "all" / "b_ep"),
    ]


def test_lerobot_video_features(tmp_path):
    root = tmp_path / "vids"
    (root / "meta").mkdir(parents=True)
    info = {
        "codebase_version": "v2.1",
        "fps": 10,
        "total_episodes": 1,
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": {
            "observation.images.image": {"dtype": "video"},
            "observation.state": {"dtype": "float32"},
        },
    }
    (root / "meta" / "info.json").write_text(json.dumps(info))
    (root / "meta" / "tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "stack the cups"}) + "\n")
    frames = smooth_frames(4, 32, 32)
    write_video(
        root / "videos" / "chunk-000" / "observation.images.image" / "episode_000000.mp4",
        frames,
        lossless=True,
    )
    table = pa.table(
        {
            "observation.state": pa.array([[float(i)] * 8 for i in range(4)], pa.list_(pa.float32())),
            "action": pa.array([[0.5] * 7] * 4, pa.list_(pa.float32())),
            "task_index": pa.array([0] * 4, pa.int64()),
            "frame_index": pa.array(range(4), pa.int64()),
        }
    )
    (root / "data" / "chunk-000").mkdir(parents=True)
    pq.write_table(table, root / "data" / "chunk-000" / "episode_000000.parquet")
    src = open_episode(root)
    f = src.frame(3)
    assert (len(src), f.prompt, src.missing_cameras) == (
        4,
        "stack the cups",
        ("left_wrist_0_rgb", "right_wrist_0_rgb"),
    )
    np.testing.assert_array_equal(f.images["base_0_rgb"], frames[3])
    np.testing.assert_array_equal(f.state, np.full(8, 3.0, np.float32))
    np.testing.assert_array_equal(f.actions, np.full(7, 0.5, np.float32))


def _as_hf_cache(dataset, cache):
    """Lay ``dataset`` out like the Hugging Face hub cache: files in blobs/, symlinks in snapshots/<rev>/."""
    import hashlib
    import os
    import shutil

    snap = cache / "snapshots" / "0123abc"
    (cache / "blobs").mkdir(parents=True)
    for f in sorted(p for p in dataset.rglob("*") if p.is_file()):
        blob = cache / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blob)
        link = snap / f.relative_to(dataset)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return snap


def test_lerobot_in_the_hugging_face_cache_layout(tmp_path):
    data = make_lerobot(tmp_path / "plain", episodes=(3,))
    snap = _as_hf_cache(tmp_path / "plain", tmp_path / "hub" / "datasets--org--libero")
    assert (snap / "data" / "chunk-000" / "episode_000000.parquet").is_symlink()
    with open_episode(snap) as src:
        assert len(src) == 3
        np.testing.assert_array_equal(src.images(1)["base_0_rgb"], data[0][0][1])
    # a link leaving the cache root is still refused
    link = snap / "data" / "chunk-000" / "episode_000000.parquet"
    outside = tmp_path / "elsewhere.parquet"
    outside.write_bytes(link.read_bytes())
    link.unlink()
    link.symlink_to(outside)
    with pytest.raises(FlowlensError, match=r"points outside .*datasets--org--libero"):
        open_episode(snap)
