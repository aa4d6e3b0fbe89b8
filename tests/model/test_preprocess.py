"""Model inputs as openpi prepares them: letterbox rounding, value range, cameras, masks, rotation."""

import random

import numpy as np
import pytest
from PIL import Image

from flowlens.core.frame import FrameTransform
from flowlens.errors import FlowlensError
from flowlens.model.config import get_config
from flowlens.model.norm_stats import NormStats
from flowlens.model.observation import check_observation
from flowlens.model.preprocess import (
    make_observation,
    pad_state,
    prepare_image,
    resize_with_pad,
    to_model_range,
)
from flowlens.model.tokenizer import PaligemmaTokenizer, train_sentencepiece


@pytest.fixture(scope="module")
def tok():
    rnd = random.Random(0)
    words = [
        "pick",
        "up",
        "the",
        "black",
        "bowl",
        "place",
        "it",
        "on",
        "plate",
        "open",
        "drawer",
        "Task:",
        "State:",
        "Action:",
        "put",
        "in",
        "basket",
    ]
    sents = [" ".join(rnd.choice(words) for _ in range(8)) for _ in range(300)]
    sents += [f"Task: x, State: {rnd.randint(0, 255)} {rnd.randint(0, 255)};\nAction: " for _ in range(50)]
    model = train_sentencepiece(sents, vocab_size=60, remove_extra_whitespaces=False, split_digits=True,
                                hard_vocab_limit=False)
    return PaligemmaTokenizer.from_bytes(model, max_len=48)


def _frame(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _openpi_letterbox(img, size):
    """openpi_client.image_tools._resize_with_pad_pil, written out from its description (PIL)."""
    pil = Image.fromarray(img)
    w, h = pil.size
    ratio = max(w / size, h / size)
    rh, rw = int(h / ratio), int(w / ratio)
    resized = pil.resize((rw, rh), resample=Image.BILINEAR)
    canvas = Image.new(resized.mode, (size, size), 0)
    canvas.paste(resized, (max(0, int((size - rw) / 2)), max(0, int((size - rh) / 2))))
    return np.asarray(canvas)


@pytest.mark.parametrize(
    ("h", "w", "box"),
    [
        (480, 640, (28, 0, 168, 224)),
        (640, 480, (0, 28, 224, 168)),
        (100, 37, (0, 71, 224, 82)),
        (300, 301, (0, 0, 223, 224)),
    ],
    ids=["480x640", "640x480", "100x37", "300x301"],
)
def test_resize_with_pad_rounding_matches_openpi(h, w, box):
    img = np.full((h, w, 3), 255, np.uint8)
    out = resize_with_pad(img, 224, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert FrameTransform((h, w), (224, 224)).content_box == box
    top, left, rh, rw = box
    content = np.zeros((224, 224), bool)
    content[top : top + rh, left : left + rw] = True
    assert (out[content] == 255).all() and (out[~content] == 0).all()
    real = _frame(h, w)
    np.testing.assert_array_equal(resize_with_pad(real, 224, 224), _openpi_letterbox(real, 224))


def test_resize_is_noop_at_target_and_batched():
    img = _frame(224, 224)
    assert resize_with_pad(img, 224, 224) is img
    batch = np.stack([_frame(48, 64, s) for s in range(3)])
    out = resize_with_pad(batch, 32, 32)
    assert out.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(out[1], resize_with_pad(batch[1], 32, 32))


def test_float_frames_are_rejected():
    with pytest.raises(FlowlensError, match=r"must be uint8.*\(255 \* image\)"):
        resize_with_pad(np.zeros((10, 10, 3), np.float32), 8, 8)


def test_model_range():
    x = to_model_range(np.array([0, 128, 255], np.uint8))
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [-1.0, 128 / 255 * 2 - 1, 1.0], atol=1e-7)


def test_prepare_image_range_and_padding_value():
    img, tf = prepare_image(_frame(480, 640), 224)
    assert img.shape == (224, 224, 3) and img.dtype == np.float32
    assert img.min() >= -1.0 and img.max() <= 1.0
    assert (img[:28] == -1.0).all() and (img[196:] == -1.0).all()  # letterbox = black = -1
    assert tf == FrameTransform((480, 640), (224, 224), rotate180=False)


def test_rotation_180_before_letterbox():
    frame = np.zeros((256, 256, 3), np.uint8)
    frame[:32, :32] = 255  # top-left of the stored frame
    img, tf = prepare_image(frame, 224, rotate180=True)
    assert tf.rotate180 and tf.frame_size == (256, 256)
    assert (img[-20:, -20:] == 1.0).all() and (img[:20, :20] == -1.0).all()  # now bottom-right
    r, c = tf.model_to_frame(np.array([223.0]), np.array([223.0]))
    assert r[0] < 32 and c[0] < 32  # and the transform maps it back to the stored top-left
    plain, _ = prepare_image(frame, 224)
    np.testing.assert_array_equal(plain[::-1, ::-1], img)


def test_pad_state():
    np.testing.assert_array_equal(pad_state([1, 2], 4), [1, 2, 0, 0])
    with pytest.raises(FlowlensError, match="action_dim is 4"):
        pad_state(np.ones(5), 4)


def test_make_observation_pi0_libero_cameras_and_masks(tok):
    cfg = get_config("pi0_libero")
    frames = {"base_0_rgb": _frame(256, 256, 1), "left_wrist_0_rgb": _frame(480, 640, 2)}
    obs = make_observation(frames, "pick up the black bowl", np.arange(8.0), tok, cfg, rotate180=True)
    check_observation(obs, action_dim=32, max_token_len=48, image_size=224, cameras=cfg.cameras)
    assert obs.cameras == ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
    assert {c: bool(m[0]) for c, m in obs.image_masks.items()} == {
        "base_0_rgb": True,
        "left_wrist_0_rgb": True,
        "right_wrist_0_rgb": False,
    }
    assert (obs.images["right_wrist_0_rgb"] == -1.0).all()  # LIBERO's zero image
    for img in obs.images.values():
        assert img.dtype == np.float32 and img.min() >= -1 and img.max() <= 1
    assert obs.transforms["left_wrist_0_rgb"] == FrameTransform((480, 640), (224, 224), rotate180=True)
    assert obs.state.shape == (1, 32) and obs.state.dtype == np.float32
    np.testing.assert_array_equal(obs.state[0, :8], np.arange(8.0))
    assert (obs.state[0, 8:] == 0).all()
    assert obs.tokenized_prompt.shape == (1, 48) and obs.tokenized_prompt.dtype == np.int32
    assert obs.tokenized_prompt_mask.dtype == bool
    assert obs.text.words == ("pick", "up", "the", "black", "bowl")
    assert obs.text.roles[obs.tokenized_prompt_mask.sum() - 1] == "newline"  # Pi0 format


def test_make_observation_builds_model_layout(tok):
    from flowlens.model.pi0 import Pi0Model

    cfg = get_config("test_tiny")
    obs = make_observation({"base_0_rgb": _frame(60, 80)}, "open the drawer", None, tok, cfg)
    layout = Pi0Model(cfg).layout(obs)
    assert layout.text.words == ("open", "the", "drawer")
    assert [c.valid for c in layout.cameras] == [True, False, False]
    assert layout.select(words="drawer").size >= 1


def test_pi05_discrete_state_prompt_with_quantile_norm(tok):
    cfg = get_config("test_tiny_pi05")
    stats = {
        "state": NormStats(
            mean=np.zeros(2), std=np.ones(2), q01=np.array([0.0, 0.0]), q99=np.array([2.0, 4.0])
        )
    }
    obs = make_observation(
        {"base_0_rgb": _frame(56, 56)},
        "open the drawer",
        np.array([1.0, 4.0]),
        tok,
        cfg.replace(max_token_len=40),
        norm_stats=stats,
    )
    # quantile: (x - q01) / (q99 - q01 + 1e-6) * 2 - 1 → [-5e-7, 1 - 5e-7] → bins 127, 255
    np.testing.assert_allclose(obs.state[0, :2], [0.0, 1.0], atol=1e-5)
    n = int(obs.tokenized_prompt_mask.sum())
    assert tok.decode(obs.tokenized_prompt[0, :n]) == "Task: open the drawer, State: 127 255;\nAction: "
    assert {"127", "255;"} <= set(obs.text.words)
    plain = make_observation(
        {"base_0_rgb": _frame(56, 56)},
        "open the drawer",
        np.array([1.0, 4.0]),
        tok,
        cfg.replace(max_token_len=40),
        discrete_state=False,
    )
    assert plain.text.words == ("open", "the", "drawer")


def test_pi05_libero_keeps_state_out_of_prompt(tok):
    cfg = get_config("pi05_libero")
    obs = make_observation({"base_0_rgb": _frame(224, 224)}, "open the drawer", np.zeros(8), tok, cfg)
    assert obs.text.words == ("open", "the", "drawer")
    assert obs.tokenized_prompt.shape == (1, 200)


def test_make_observation_errors(tok):
    cfg = get_config("test_tiny")
    with pytest.raises(FlowlensError, match="Did you mean 'left_wrist_0_rgb'"):
        make_observation({"left_wrist_rgb": _frame(56, 56)}, "x", None, tok, cfg)
    with pytest.raises(FlowlensError, match="frames is empty"):
        make_observation({}, "x", None, tok, cfg)
    with pytest.raises(FlowlensError, match=r"uint8 \[H, W, 3\]"):
        make_observation({"base_0_rgb": np.zeros((56, 56), np.uint8)}, "x", None, tok, cfg)
    with pytest.raises(FlowlensError, match="needs a state"):
        make_observation({"base_0_rgb": _frame(56, 56)}, "x", None, tok, cfg, discrete_state=True)


def test_image_mask_override(tok):
    cfg = get_config("test_tiny")
    obs = make_observation(
        {"base_0_rgb": _frame(56, 56)}, "x", None, tok, cfg, image_masks={"right_wrist_0_rgb": True}
    )
    assert bool(obs.image_masks["right_wrist_0_rgb"][0]) and not bool(obs.image_masks["left_wrist_0_rgb"][0])


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ("0.5", r"state must be a 1-D vector of numbers, got a str"),
        (np.array(["a", "b"]), r"state must be a 1-D vector of numbers, got dtype <U1"),
        (np.array([1.0, None], dtype=object), r"state must be a 1-D vector of numbers, got dtype object"),
        (np.ones((2, 2)), r"state must be a 1-D vector \[d\], got shape \(2, 2\)"),
        (np.array([0.1, np.nan, 0.3]), r"state must be finite; entry 1 is nan"),
        (np.array([0.1, 0.2, -np.inf]), r"state must be finite; entry 2 is -inf"),
    ],
)
def test_bad_states_are_named(tok, state, message):
    cfg = get_config("test_tiny")
    with pytest.raises(FlowlensError, match=message):
        make_observation({"base_0_rgb": _frame(56, 56)}, "x", state, tok, cfg)
    with pytest.raises(FlowlensError, match=message):
        pad_state(state, 8)


@pytest.mark.parametrize(("h", "w"), [(0, 0), (1, 4000), (4000, 1), (0, 5)])
def test_degenerate_images_are_named(tok, h, w):
    cfg = get_config("test_tiny")
    frame = np.zeros((h, w, 3), np.uint8)
    with pytest.raises(FlowlensError, match=rf"{h}×{w}"):
        make_observation({"base_0_rgb": frame}, "x", None, tok, cfg)
    with pytest.raises(FlowlensError, match=rf"{h}×{w}"):
        resize_with_pad(frame, 224, 224)


def test_non_finite_observation_is_named_before_the_model(tok):
    import dataclasses

    cfg = get_config("pi0_libero")
    obs = make_observation({"base_0_rgb": _frame(224, 224)}, "x", np.zeros(8), tok, cfg)
    check_observation(obs, action_dim=32, max_token_len=48, image_size=224, cameras=cfg.cameras)
    state = obs.state.copy()
    state[0, 3] = np.nan
    with pytest.raises(FlowlensError, match=r"Observation\.state holds NaN or inf"):
        check_observation(dataclasses.replace(obs, state=state), action_dim=32, max_token_len=48, image_size=224)
    images = dict(obs.images)
    images["base_0_rgb"] = np.full_like(images["base_0_rgb"], np.inf)
    with pytest.raises(FlowlensError, match=r"Observation\.images\['base_0_rgb'\] holds NaN or inf"):
        check_observation(dataclasses.replace(obs, images=images), action_dim=32, max_token_len=48, image_size=224)
