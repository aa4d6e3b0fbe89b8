import numpy as np
import pytest

from flowlens import FlowlensError
from flowlens.core import TokenKind, pi0_layout, pi05_layout
from flowlens.core.frame import FrameTransform
from flowlens.core.layout import TokenLayout
from flowlens.core.segments import TextSegment
from flowlens.testing import toy_layout


def test_pi0_libero_layout_sizes_and_masks():
    lay = pi0_layout("pick up the black bowl and place it on the plate")
    assert (lay.n, lay.prefix_len, lay.suffix_len) == (867, 816, 51)
    assert [s.name for s in lay.segments] == [
        "base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb", "prompt", "state", "actions"]
    valid = lay.valid
    assert valid[:512].all() and not valid[512:768].any()
    text = lay.text
    assert text.roles[0] == "bos" and text.pieces[0] == "<bos>"
    n_text = sum(text.valid)
    assert text.roles[n_text - 1] == "newline"
    assert not any(text.valid[n_text:]) and set(text.roles[n_text:]) == {"pad"}
    assert lay.state.size == 1 and lay.actions.horizon == 50
    # positions: masked camera and padding do not advance RoPE positions (openpi: cumsum(mask) - 1)
    pos = lay.positions
    assert pos[255] == 255 and pos[511] == 511 and pos[600] == 511 and pos[768] == 512
    assert pos[lay.state.start] == pos[768 + n_text - 1] + 1


def test_pi05_layout_has_no_state_and_10_actions():
    lay = pi05_layout()
    assert (lay.n, lay.prefix_len) == (978, 968)
    assert lay.state is None and lay.actions.horizon == 10
    assert lay.text.size == 200


def test_attention_mask_is_block_causal():
    lay = toy_layout()  # 2×(2×2) patches (second masked), 8 text, state, 3 actions
    m = lay.attention_mask()
    s, a = lay.state.start, lay.actions.start
    assert m[0, lay.text.start] and m[lay.text.start, 0]          # prefix bidirectional
    assert not m[0, s] and not m[0, a]                            # prefix cannot see the suffix
    assert m[s, 0] and m[s, s] and not m[s, a]                    # state sees prefix and itself
    assert m[a, s] and m[a, a + 2] and m[a + 2, a]                # actions see all, bidirectional
    assert not m[:, 4:8].any() and not m[4:8].any()               # masked camera: no rows, no cols


def test_text_segment_merges_subword_pieces_into_words():
    seg = TextSegment.from_pieces(
        start=0, token_ids=[2, 10, 11, 12, 13, 108, 0],
        pieces=["<bos>", "▁pick", "▁bl", "ack", "▁bowl", "\n", "<pad>"],
        valid=[True] * 6 + [False])
    assert seg.words == ("pick", "black", "bowl")
    assert seg.word_of_token == (-1, 0, 1, 1, 2, -1, -1)
    assert seg.roles == ("bos", "", "", "", "", "newline", "pad")


def test_groups_and_selection():
    lay = toy_layout("pick the red bowl")
    groups = lay.groups()
    assert list(groups) == ["base_0_rgb", "bos", "words", "newline", "state", "actions"]
    np.testing.assert_array_equal(lay.select(camera="base_0_rgb"), [0, 1, 2, 3])
    red = lay.select(words="RED")
    assert [lay.token_labels()[i] for i in red] == ["red"]
    np.testing.assert_array_equal(lay.select(horizon=-1), [lay.n - 1])
    np.testing.assert_array_equal(lay.select(kind="action", horizon=slice(0, 2)), lay.actions.indices[:2])
    assert lay.select(kind=TokenKind.STATE).tolist() == [lay.state.start]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"camera": "base_rgb"}, "Did you mean 'base_0_rgb'"),
    ({"words": "bwol"}, "Did you mean 'bowl'"),
    ({"horizon": 7}, "horizon 7 out of range: the action chunk has 3 tokens (0–2)"),
    ({"kind": "imgae"}, "Did you mean 'image'"),
    ({"group": "word"}, "Did you mean 'words'"),
    ({"camera": "left_wrist_0_rgb"}, "matches no valid token"),
])
def test_selection_errors_are_clear(kwargs, message):
    with pytest.raises(FlowlensError, match=message.replace("(", r"\(").replace(")", r"\)")):
        toy_layout("pick the red bowl").select(**kwargs)


def test_layout_round_trips_through_dict():
    tf = FrameTransform((480, 640), (224, 224), rotate180=True)
    lay = pi0_layout("put the blue cube in the yellow bowl", transforms=[tf] * 3)
    back = TokenLayout.from_dict(lay.to_dict())
    assert back.to_dict() == lay.to_dict()
    assert back.cameras[0].transform == tf
    np.testing.assert_array_equal(back.valid, lay.valid)


def test_segments_must_be_contiguous():
    lay = toy_layout()
    segs = list(lay.segments)
    segs[1], segs[2] = segs[2], segs[1]
    with pytest.raises(FlowlensError, match="contiguous"):
        TokenLayout(segments=tuple(segs), prefix_len=lay.prefix_len)


def test_token_labels():
    labels = toy_layout("pick the red bowl").token_labels()
    assert labels[:2] == ["base_0_rgb[0,0]", "base_0_rgb[0,1]"]
    assert labels[8:14] == ["<bos>", "pick", "the", "red", "bowl", "\\n"]
    assert labels[-4:] == ["state", "a0", "a1", "a2"]


def test_unknown_segment_suggests_the_closest_name():
    with pytest.raises(FlowlensError, match="Did you mean 'actions'"):
        pi0_layout().segment("action")


def test_lone_word_marks_and_byte_pieces_join_their_word():
    seg = TextSegment.from_pieces(
        start=0, token_ids=list(range(7)),
        pieces=["<bos>", "▁put", "▁", "3", "▁cubes", "<0x21>", "\n"], valid=[True] * 7)
    assert seg.words == ("put", "3", "cubes!")
    assert seg.word_of_token == (-1, 0, 1, 1, 2, 2, -1)
