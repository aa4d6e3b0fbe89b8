"""Tabletop episodes written as flowlens episode folders and read back through the real reader."""

import json

import numpy as np

from flowlens.io.sources.episode_dir import EpisodeDirSource
from flowlens.tasks.tabletop.config import IMAGE_SIZE
from flowlens.tasks.tabletop.episodes import generate_demo_episodes, write_episode_dir
from flowlens.tasks.tabletop.expert import CAMERAS, run_expert
from flowlens.tasks.tabletop.scene import sample_scene


def test_episode_folder_round_trip(tmp_path):
    ep = run_expert(sample_scene(5))
    path = write_episode_dir(ep, tmp_path / "ep", lossless=True)
    src = EpisodeDirSource(path)
    try:
        assert len(src) == ep.num_frames
        assert src.prompt == ep.scene.prompt and src.success is True
        assert set(src.cameras) == set(CAMERAS)
        assert src.objects == tuple(o.name for o in ep.scene.objects)
        for cam in CAMERAS:
            tf = src.transforms[cam]
            assert tf.model_size == (IMAGE_SIZE, IMAGE_SIZE) and tf.frame_size == ep.frames[cam].shape[1:3]
        t = ep.num_frames // 2
        frame = src.frame(t)
        for cam in CAMERAS:
            np.testing.assert_array_equal(frame.images[cam], ep.frames[cam][t])  # lossless video
            labels = src.masks(t)[cam]
            for i in range(len(ep.scene.objects)):
                np.testing.assert_array_equal(labels == i + 1, ep.masks[cam][t, i])
        boxes = src.boxes(t)["base_0_rgb"]
        for i, o in enumerate(ep.scene.objects):
            want = ep.boxes["base_0_rgb"][t, i]
            assert (boxes[o.name] is None) == (not want.any())
            if boxes[o.name] is not None:
                np.testing.assert_allclose(boxes[o.name], want)
        np.testing.assert_allclose(src._state(t), ep.states[t], atol=1e-6)
        meta = src.metadata
        assert meta["source_name"] == ep.scene.source_object.name and meta["picked"] == ep.scene.source
        assert len(meta["phases"]) == ep.num_frames
    finally:
        src.close()


def test_demo_episodes_success_and_failure(tmp_path):
    ok, bad = generate_demo_episodes(tmp_path, seed=3)
    a = json.loads((ok / "episode.json").read_text())
    b = json.loads((bad / "episode.json").read_text())
    assert a["success"] is True and b["success"] is False
    mb = b["metadata"]
    assert mb["picked"] != mb["source"]
    scene = mb["scene"]["objects"]
    assert scene[mb["picked"]]["kind"] == scene[mb["source"]]["kind"]  # a same-kind distractor
    assert (ok / "base_0_rgb.mp4").is_file() and (bad / "masks.npz").is_file()
    # deterministic in the seed
    ok2, _ = generate_demo_episodes(tmp_path / "again", seed=3)
    assert json.loads((ok2 / "episode.json").read_text())["prompt"] == a["prompt"]
