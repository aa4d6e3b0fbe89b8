"""Training data of the embedded model: samples, the auxiliary pre-training targets, the curriculum
scenes, and one short end-to-end training run through the script."""

import json

import numpy as np
import pytest

from flowlens.errors import FlowlensError
from flowlens.model.tokenizer import PaligemmaTokenizer
from flowlens.tasks.tabletop.config import tabletop_config
from flowlens.tasks.tabletop.dataset import GOAL_SCALE, make_samples, patch_labels
from flowlens.tasks.tabletop.expert import run_expert
from flowlens.tasks.tabletop.render import GRIPPER_ID
from flowlens.tasks.tabletop.scene import PICKABLE, RECEPTACLES, TABLE_SIZE, sample_scene
from flowlens.tasks.tabletop.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return PaligemmaTokenizer.from_bytes(train_tokenizer(), max_len=tabletop_config().max_token_len)


def test_two_object_scenes_have_source_and_target_only():
    for seed in range(20):
        s = sample_scene(seed, num_objects=2)
        assert len(s.objects) == 2
        assert s.source_object.kind in PICKABLE and s.target_object.kind in RECEPTACLES
        assert s.source_object.color != s.target_object.color
        assert s.source_object.name in s.prompt and s.target_object.name in s.prompt
    with pytest.raises(FlowlensError, match="num_objects must be 2, 3 or 4"):
        sample_scene(0, num_objects=1)


def test_patch_labels_are_the_letterboxed_shares_of_each_patch():
    cfg = tabletop_config()
    # a hand-made id buffer: the wrist camera is square (no letterbox), the source fills exactly
    # the top-left model patch, the target half of the patch right of it, the gripper one quarter
    # of the bottom-right patch
    scene = sample_scene(3)
    wrist = np.zeros((96, 96), np.uint8)
    k = 96 // 4  # one 14-px model patch = 24 frame pixels
    wrist[:k, :k] = scene.source + 1
    wrist[:k, k : k + k // 2] = scene.target + 1
    wrist[-k // 2 :, -k // 2 :] = GRIPPER_ID
    base = np.zeros((144, 192), np.uint8)  # 4:3: letterboxed to 56 x 42 content rows
    base[:, :] = scene.source + 1
    views = {
        "base_0_rgb": (np.zeros((144, 192, 3), np.uint8), base),
        "left_wrist_0_rgb": (np.zeros((96, 96, 3), np.uint8), wrist),
    }
    lab = patch_labels(views, scene, cfg)
    assert lab.shape == (2, 16, 3)
    w = lab[1]
    np.testing.assert_allclose(w[0], [1.0, 0.0, 0.0], atol=0.02)
    np.testing.assert_allclose(w[1], [0.0, 0.5, 0.0], atol=0.04)
    np.testing.assert_allclose(w[15], [0.0, 0.0, 0.25], atol=0.04)
    assert w[2:15].max() < 0.05
    # base: a full-frame source, letterboxed: 7 black rows top and bottom of the 56-px input
    b = lab[0, :, 0].reshape(4, 4)
    np.testing.assert_allclose(b[1:3], 1.0, atol=0.02)
    np.testing.assert_allclose(b[0], 7 / 14, atol=0.05)
    np.testing.assert_allclose(b[3], 7 / 14, atol=0.05)


def test_samples_and_grounding_targets_match_the_expert(tokenizer):
    cfg = tabletop_config()
    s = make_samples([5, 6], tokenizer, cfg, frames_per_episode=3)
    assert s.images.shape == (6, 2, 56, 56, 3) and s.patch_labels.shape == (6, 2, 16, 3)
    g = s.goals
    assert g.shape == (6, 8) and g.dtype == np.float32
    for i in range(len(s)):
        scene = sample_scene(int(s.seeds[i]))
        ep = run_expert(scene, render_frames=False)
        t = int(s.frames[i])
        st, xy = ep.states[t], ep.object_xy[t]
        np.testing.assert_allclose(s.states[i], st)
        np.testing.assert_allclose(g[i, :2] * GOAL_SCALE, xy[scene.source] - st[:2], atol=1e-6)
        np.testing.assert_allclose(g[i, 2:4] * GOAL_SCALE, xy[scene.target] - st[:2], atol=1e-6)
        np.testing.assert_allclose(g[i, 4:6] * GOAL_SCALE, st[:2] - np.asarray(TABLE_SIZE) / 2, atol=1e-6)
        np.testing.assert_allclose(g[i, 6:8] * GOAL_SCALE, st[2:4], atol=1e-6)
        # the labels come from the frame's own id buffer
        np.testing.assert_allclose(s.patch_labels[i], patch_labels(ep.render_frame(t), scene, cfg))
    # the source is somewhere in view of the base camera
    assert (s.patch_labels[:, 0, :, 0].sum(axis=1) > 0.2).all()


def test_curriculum_samples_use_two_object_scenes(tokenizer):
    s = make_samples([1, 2], tokenizer, tabletop_config(), frames_per_episode=1, num_objects=2)
    g = s.goals
    for i, seed in enumerate(s.seeds.tolist()):
        scene = sample_scene(seed, num_objects=2)
        ep = run_expert(scene, render_frames=False)
        t = int(s.frames[i])
        np.testing.assert_allclose(g[i, :2] * GOAL_SCALE, ep.object_xy[t, scene.source] - ep.states[t, :2], atol=1e-6)


def test_sincos_position_embedding_literal_values():
    from flowlens.tasks.tabletop.init import posemb_sincos_2d

    pe = posemb_sincos_2d(2, 8)  # frequencies 1 and 1e-4; columns: sin(col), cos(col), sin(row), cos(row)
    assert pe.shape == (4, 8) and pe.dtype == np.float32
    s1, c1 = np.sin(1.0), np.cos(1.0)
    s4, c4 = np.sin(1e-4), np.cos(1e-4)
    expected = np.array(
        [
            [0, 0, 1, 1, 0, 0, 1, 1],  # patch (row 0, col 0)
            [s1, s4, c1, c4, 0, 0, 1, 1],  # (0, 1)
            [0, 0, 1, 1, s1, s4, c1, c4],  # (1, 0)
            [s1, s4, c1, c4, s1, s4, c1, c4],  # (1, 1)
        ]
    )
    np.testing.assert_allclose(pe, expected, atol=1e-7)
    with pytest.raises(ValueError, match="multiple of 4"):
        posemb_sincos_2d(2, 6)


@pytest.mark.slow
def test_training_script_runs_end_to_end(tmp_path):
    from flowlens.tasks.tabletop.train import main

    out = tmp_path / "run"
    main(
        [
            "--out",
            str(out),
            "--episodes",
            "4",
            "--frames-per-episode",
            "2",
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--warmup",
            "1",
            "--grounding",
            "1",
            "--segmentation",
            "1",
            "--eval-scenes",
            "2",
            "--save-every",
            "2",
        ]
    )
    for name in (
        "params.npz",
        "loss.csv",
        "loss.png",
        "summary.json",
        "norm_stats.json",
        "config.json",
        "tokenizer.model",
    ):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and np.isfinite(summary["final_loss_mean50"])
    assert summary["held_out"]["frames"] == 2
    rows = (out / "loss.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) == 4
    from flowlens.tasks.tabletop.params_io import load_params_npz

    params = load_params_npz(out / "params.npz")
    assert set(params) >= {"PaliGemma", "action_in_proj"} and "aux" not in params
