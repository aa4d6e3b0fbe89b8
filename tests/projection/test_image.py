import numpy as np
import pytest

from flowlens import FlowlensError, FrameTransform, frame_heatmap, patch_grid
from flowlens.core import pi0_layout
from flowlens.projection import camera_segment, model_heatmap


def layout_with(tf):
    return pi0_layout(transforms=[tf] * 3)


def one_hot_scores(layout, camera, row, col):
    seg = camera_segment(layout, camera)
    s = np.zeros(layout.n)
    s[seg.start + row * seg.grid[1] + col] = 1.0
    return s


def test_patch_grid_is_row_major():
    lay = pi0_layout()
    grid = patch_grid(one_hot_scores(lay, "left_wrist_0_rgb", 3, 5), lay, "left_wrist_0_rgb")
    assert grid.shape == (16, 16) and grid[3, 5] == 1.0 and grid.sum() == 1.0
    assert patch_grid(np.zeros((4, lay.n)), lay, 1).shape == (4, 16, 16)


def test_model_heatmap_paints_patch_blocks():
    lay = pi0_layout()
    seg = camera_segment(lay, 0)
    heat = model_heatmap(patch_grid(one_hot_scores(lay, 0, 2, 1), lay, 0), seg)
    assert heat.shape == (224, 224)
    assert heat[28:42, 14:28].min() == 1.0 and heat.sum() == 14 * 14


def test_frame_heatmap_undoes_rotation():
    tf = FrameTransform((224, 224), (224, 224), rotate180=True)
    lay = layout_with(tf)
    seg = camera_segment(lay, 0)
    # top-left patch of what the model saw is the bottom-right corner of the original frame
    heat = frame_heatmap(patch_grid(one_hot_scores(lay, 0, 0, 0), lay, 0), seg, smooth=False)
    assert heat[-1, -1] == 1.0 and heat[0, 0] == 0.0
    assert heat[210:, 210:].min() == 1.0 and heat.sum() == 14 * 14


def test_frame_heatmap_undoes_letterbox():
    tf = FrameTransform((480, 640), (224, 224))  # content rows 28..196 of the model input
    lay = layout_with(tf)
    seg = camera_segment(lay, 0)
    # row 2 (pixels 28..42 in the model) is the first content row: frame rows 0..40
    heat = frame_heatmap(patch_grid(one_hot_scores(lay, 0, 2, 0), lay, 0), seg, smooth=False)
    assert heat.shape == (480, 640)
    assert heat[:40, :40].min() == 1.0 and heat[41:, :].max() == 0.0
    # a patch in the padding (row 0) never appears on the frame
    pad = frame_heatmap(patch_grid(one_hot_scores(lay, 0, 0, 0), lay, 0), seg, smooth=False)
    assert pad.max() == 0.0


def test_smooth_heatmap_peaks_at_patch_centre():
    lay = pi0_layout()
    seg = camera_segment(lay, 0)
    heat = frame_heatmap(patch_grid(one_hot_scores(lay, 0, 8, 8), lay, 0), seg)
    r, c = np.unravel_index(np.argmax(heat), heat.shape)
    assert abs(r - (8 * 14 + 7)) <= 1 and abs(c - (8 * 14 + 7)) <= 1


def test_errors():
    lay = pi0_layout()
    with pytest.raises(FlowlensError, match="one value per token"):
        patch_grid(np.zeros(10), lay)
    with pytest.raises(FlowlensError, match="Did you mean 'base_0_rgb'"):
        patch_grid(np.zeros(lay.n), lay, "base_rgb")
    with pytest.raises(FlowlensError, match=r"camera 5 out of range: this layout has 3 cameras"):
        camera_segment(lay, 5)
