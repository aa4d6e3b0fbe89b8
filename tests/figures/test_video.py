import os

import numpy as np
import pytest

from flowlens.errors import FlowlensError
from flowlens.figures import overlay_frame, write_video
from flowlens.figures.video import attention_video


def frames(count, shape=(48, 63, 3)):
    for t in range(count):
        f = np.zeros(shape, np.uint8)
        f[:, : (t + 1) * 5] = 200
        yield f


def test_mp4_roundtrip(tmp_path):
    import av

    path = write_video(frames(6), tmp_path / "a.mp4", fps=5)
    with av.open(str(path)) as container:
        decoded = list(container.decode(video=0))
    assert len(decoded) == 6
    assert (decoded[0].height, decoded[0].width) == (48, 64)  # padded to even


def test_gif_roundtrip(tmp_path):
    from PIL import Image

    path = write_video(frames(4), tmp_path / "a.gif", fps=4)
    with Image.open(path) as im:
        assert im.n_frames == 4


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_interrupted_video_leaves_no_file(tmp_path, suffix):
    def failing():
        yield from frames(3)
        raise KeyboardInterrupt("stopped mid-episode")

    with pytest.raises(KeyboardInterrupt):
        write_video(failing(), tmp_path / f"a{suffix}")
    assert os.listdir(tmp_path) == []


def test_video_errors(tmp_path):
    with pytest.raises(FlowlensError, match=".mp4 or .gif"):
        write_video(frames(1), tmp_path / "a.avi")
    with pytest.raises(FlowlensError, match="empty"):
        write_video([], tmp_path / "a.gif")
    assert os.listdir(tmp_path) == []

    def mixed():
        yield np.zeros((8, 8, 3), np.uint8)
        yield np.zeros((8, 10, 3), np.uint8)

    with pytest.raises(FlowlensError, match="one size"):
        write_video(mixed(), tmp_path / "a.gif")


def test_overlay_frame_blends_and_labels(data):
    seg = data.layout.cameras[0]
    grid = np.zeros(seg.grid)
    grid[8, 8] = 1.0
    img = data.images["base_0_rgb"]
    out = overlay_frame(img, grid, seg, alpha=0.5, label="frame 3")
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(out, img)
    model = overlay_frame(img, grid, seg, on="model")
    assert model.shape == (224, 224, 3)


def test_attention_video(tmp_path, data):
    scores = np.stack([data.rollout[-1], data.rollout[0], data.rollout[5]])
    imgs = [data.images["base_0_rgb"]] * 3
    path = attention_video(imgs, scores, data.layout, tmp_path / "ep.gif", fps=2)
    assert path.exists()
    with pytest.raises(FlowlensError, match="one row per frame"):
        attention_video(imgs[:2], scores, data.layout, tmp_path / "x.gif")


def test_attention_video_has_a_fixed_colour_scale_under_every_frame(tmp_path, data):
    import matplotlib
    from PIL import Image

    scores = np.stack([data.rollout[-1], data.rollout[5]])
    imgs = [data.images["base_0_rgb"]] * 2
    h, w = imgs[0].shape[:2]
    path = attention_video(imgs, scores, data.layout, tmp_path / "ep.gif", fps=2, value_label="relevance")
    with Image.open(path) as im:
        frames = []
        for k in range(im.n_frames):
            im.seek(k)
            frames.append(np.asarray(im.convert("RGB")))
    strip = frames[0][h:]
    assert frames[0].shape[0] > h and frames[0].shape[1] == w  # the scale sits under the frame
    # one scale for the whole video (up to each GIF frame's own palette)
    assert np.median(np.abs(frames[0][h:].astype(float) - frames[1][h:])) == 0
    ramp = matplotlib.colormaps["inferno"]([0.0, 1.0])[:, :3] * 255
    row = strip[2 + max(8, w // 40) // 2].astype(float)
    assert np.abs(row[1] - ramp[0]).max() < 40 and np.abs(row[-2] - ramp[1]).max() < 40  # GIF palette
    no_bar = attention_video(imgs, scores, data.layout, tmp_path / "plain.gif", value_label=None)
    with Image.open(no_bar) as im:
        assert im.size == (w, h)


def test_attention_video_shows_every_present_camera_side_by_side(tmp_path, data):
    import av

    scores = np.stack([data.rollout[-1], data.rollout[5]])
    both = [data.images] * 2  # base 256×320, left wrist 224×224 (enlarged ×2 to 448 so text reads)
    path = attention_video(both, scores, data.layout, tmp_path / "ep.mp4", fps=2, value_label="relevance")
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 2
    assert frames[0].shape[1] == 320 + 4 + 448  # base, a 4-px gap, left wrist
    assert frames[0].shape[0] > 448  # the taller panel, then the colour scale under both
    gap = frames[0][:200, 321:323].astype(float)
    assert np.abs(gap - 255).max() < 30  # the white gap between the two panels
    one = attention_video(
        [data.images["base_0_rgb"]] * 2, scores, data.layout, tmp_path / "one.mp4", value_label="relevance"
    )
    with av.open(str(one)) as c:
        assert next(c.decode(video=0)).width == 320
    with pytest.raises(FlowlensError, match="camera the model saw"):
        attention_video([{"right_wrist_0_rgb": data.images["base_0_rgb"]}], scores[:1], data.layout, tmp_path / "x.gif")
