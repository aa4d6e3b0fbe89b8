import numpy as np
import pytest

from flowlens.core.frame import FrameTransform
from flowlens.errors import FlowlensError
from flowlens.figures import camera_overlay, image_overlay
from flowlens.figures._common import model_input_image
from flowlens.projection import camera_segment


def test_overlay_on_frame_has_frame_heatmap_and_colorbar(data):
    scores = data.rollout[-1]
    ax = camera_overlay(scores, data.layout, "base_0_rgb", image=data.images["base_0_rgb"])
    assert len(ax.images) == 2  # the frame, then the heatmap
    frame_im, heat = ax.images
    assert frame_im.get_array().shape == (256, 320, 3)
    assert heat.get_array().shape == (256, 320)  # on the original frame, not the 224 model input
    seg = camera_segment(data.layout, "base_0_rgb")
    grid_max = np.nanmax(scores[seg.start : seg.stop])
    assert heat.get_clim() == pytest.approx((0.0, grid_max))
    assert heat.colorbar is not None
    assert heat.colorbar.ax.get_ylabel() == "attention mass"
    assert ax.get_title() == "base_0_rgb"


def test_overlay_on_model_input_is_blocky_and_model_sized(data):
    ax = camera_overlay(
        data.rollout[0],
        data.layout,
        0,
        image=data.images["base_0_rgb"],
        on="model",
        show_patch_grid=True,
        vmax=0.01,
        cbar_label="relevance",
    )
    assert ax.images[0].get_array().shape == (224, 224, 3)
    assert ax.images[-1].get_clim() == (0.0, 0.01)
    assert len(ax.lines) == 2 * 17  # 16 patches → 17 boundaries per direction
    assert ax.images[-1].colorbar.ax.get_ylabel() == "relevance"


def test_rotation_is_undone_on_the_frame():
    """A hot patch in the model's top-left corner lies in the frame's bottom-right when rotated 180°."""
    from flowlens.core.openpi_layout import pi0_layout

    layout = pi0_layout(transforms=[FrameTransform((224, 224), (224, 224), True)] + [FrameTransform()] * 2)
    seg = layout.cameras[0]
    grid = np.zeros(seg.grid)
    grid[0, 0] = 1.0
    ax = image_overlay(grid, seg, on="frame", smooth=False)
    heat = np.asarray(ax.images[-1].get_array())
    r, c = np.unravel_index(np.argmax(heat), heat.shape)
    assert r >= 224 - 14 and c >= 224 - 14
    ax2 = image_overlay(grid, seg, on="model")
    r2, c2 = np.unravel_index(np.nanargmax(np.asarray(ax2.images[-1].get_array())), (224, 224))
    assert r2 < 14 and c2 < 14


def test_masked_camera_is_labelled(data):
    ax = camera_overlay(np.full(data.layout.n, np.nan), data.layout, "right_wrist_0_rgb")
    assert "masked" in ax.get_title()
    assert any("camera masked" in t.get_text() for t in ax.texts)


def test_model_input_letterboxes_and_rotates():
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[:, :100] = 255  # left half white
    out = model_input_image(frame, FrameTransform((100, 200), (224, 224), True))
    assert out.shape == (224, 224, 3)
    assert out[:56].max() == 0 and out[-56:].max() == 0  # letterbox bars
    assert out[112, 200].min() == 255 and out[112, 20].max() == 0  # rotated: white on the right


def test_bad_grid_names_expected_shape(data):
    with pytest.raises(FlowlensError, match=r"\(16, 16\)"):
        image_overlay(np.zeros((4, 4)), data.layout.cameras[0])
    with pytest.raises(FlowlensError, match="867"):
        camera_overlay(np.zeros(10), data.layout)
