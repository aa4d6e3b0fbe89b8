import numpy as np
import pytest

from flowlens import FlowlensError, FrameTransform


def test_square_frame_is_plain_resize():
    tf = FrameTransform((256, 256), (224, 224))
    assert tf.content_box == (0, 0, 224, 224)
    r, c = tf.model_to_frame(np.array([0.0, 224.0]), np.array([0.0, 112.0]))
    np.testing.assert_allclose(r, [0, 256]) and np.testing.assert_allclose(c, [0, 128])


def test_letterbox_matches_openpi_rounding():
    # 480×640 → ratio max(640/224, 480/224) = 2.857; resized 168×224; pad (224-168)/2 = 28 on top
    tf = FrameTransform((480, 640), (224, 224))
    assert tf.content_box == (28, 0, 168, 224)
    # a patch fully inside the top padding maps to an empty box in the frame
    assert tf.model_box_to_frame((0, 0, 14, 14))[2] == 0.0
    top, left, h, w = tf.model_box_to_frame((28, 0, 14, 14))
    assert (top, left) == (0.0, 0.0) and h == pytest.approx(40.0) and w == pytest.approx(40.0)


def test_rotation_round_trip():
    tf = FrameTransform((480, 640), (224, 224), rotate180=True)
    rows, cols = np.array([10.0, 100.0, 470.0]), np.array([5.0, 320.0, 600.0])
    back = tf.model_to_frame(*tf.frame_to_model(rows, cols))
    np.testing.assert_allclose(back, (rows, cols))
    # the top-left corner of the model content is the bottom-right of the frame
    r, c = tf.model_to_frame(np.array([28.0]), np.array([0.0]))
    assert (r[0], c[0]) == (480.0, 640.0)


def test_bad_sizes_are_rejected():
    with pytest.raises(FlowlensError, match="frame_size"):
        FrameTransform((0, 10))
