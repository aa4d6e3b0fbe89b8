import numpy as np
import pytest

from flowlens import FlowlensError
from flowlens.core.openpi_layout import openpi_layout, pi0_layout
from flowlens.core.query import select_query
from flowlens.core.selection import Selection, index_set, parse_selection, resolve_tokens
from flowlens.testing import toy_layout

# toy_layout(): base_0_rgb 0-3 (2×2 grid), left_wrist_0_rgb 4-7 (masked), prompt 8-15
# (<bos> 8, pick 9, the 10, red 11, bowl 12, "\n" 13, padding 14-15), state 16, actions 17-19.
LAY = toy_layout()

LITERAL = {
    "words": [9, 10, 11, 12],
    "state": [16],
    "actions": [17, 18, 19],
    "bos": [8],
    "newline": [13],
    "base_0_rgb": [0, 1, 2, 3],
    "cameras": [0, 1, 2, 3],
    "prefix": [0, 1, 2, 3, 8, 9, 10, 11, 12, 13],
    "suffix": [16, 17, 18, 19],
    "all": [0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 16, 17, 18, 19],
    "camera:base_0_rgb": [0, 1, 2, 3],
    "camera:base_0_rgb,left_wrist_0_rgb": [0, 1, 2, 3],
    "words:red": [11],
    "words:RED,pick": [9, 11],
    "words:0,3": [9, 12],
    "words[1:3]": [10, 11],
    "patches:base_0_rgb": [0, 1, 2, 3],
    "patches:base_0_rgb[0:1,:]": [0, 1],
    "patches:base_0_rgb[:,1]": [1, 3],
    "patches:base_0_rgb[1,1]": [3],
    "actions[0:2]": [17, 18],
    "actions[-1]": [19],
    "actions[0,2]": [17, 19],
    "action:1": [18],
    "a2": [19],
    "last": [19],
    "tokens[3,8:10]": [3, 8, 9],
    "words | state": [9, 10, 11, 12, 16],
    "words|state": [9, 10, 11, 12, 16],
    "cameras - patches:base_0_rgb[0,:]": [2, 3],
    "(words | state) & words:red": [11],
    "words - words:red - bos": [9, 10, 12],
    "words - (words:red | words:pick)": [10, 12],
    "state | actions & a0": [16, 17],
    "(state | actions) & a0": [17],
    "all - prefix": [16, 17, 18, 19],
}


@pytest.mark.parametrize("text", sorted(LITERAL))
def test_string_forms_resolve_to_literal_indices(text):
    got = resolve_tokens(LAY, text)
    assert got.dtype == np.int64
    assert got.tolist() == LITERAL[text]
    # the canonical spelling parses back to the same tokens
    again = parse_selection(str(parse_selection(text)))
    assert resolve_tokens(LAY, again).tolist() == LITERAL[text]


def test_python_object_form_composes_like_strings():
    sel = (Selection.group("words") - Selection.words("red")) | Selection.actions(slice(0, 2))
    assert resolve_tokens(LAY, sel).tolist() == [9, 10, 12, 17, 18]
    assert str(sel) == "words - words:red | actions[0:2]"
    assert resolve_tokens(LAY, Selection.group("cameras") & "patches:base_0_rgb[1,:]").tolist() == [2, 3]
    mask = np.array([[True, False], [False, True]])
    assert resolve_tokens(LAY, Selection.patches("base_0_rgb", mask=mask)).tolist() == [0, 3]
    assert resolve_tokens(LAY, Selection.patches("base_0_rgb", rows=range(1, 2))).tolist() == [2, 3]
    assert resolve_tokens(LAY, Selection.tokens([12, 11])).tolist() == [11, 12]
    assert resolve_tokens(LAY, Selection.camera("base_0_rgb") - Selection.tokens([0])).tolist() == [1, 2, 3]
    assert str(Selection.group("a") - (Selection.group("b") | Selection.group("c"))) == "a - (b | c)"
    assert str((Selection.group("a") | Selection.group("b")) & Selection.group("c")) == "(a | b) & c"


def test_lists_indices_and_masks_are_selections_too():
    assert resolve_tokens(LAY, ["state", "bos"]).tolist() == [8, 16]
    assert resolve_tokens(LAY, [17, 16]).tolist() == [16, 17]
    flags = np.zeros(LAY.n, dtype=bool)
    flags[[0, 19]] = True
    assert resolve_tokens(LAY, flags).tolist() == [0, 19]
    # masked tokens are never selected
    assert resolve_tokens(LAY, "tokens[4,5,14,16]").tolist() == [16]


def test_layout_select_patch_boxes():
    assert LAY.select(camera="base_0_rgb", patches=(1, slice(None))).tolist() == [2, 3]
    assert LAY.select(patches=(slice(0, 1), 0)).tolist() == [0]  # every camera; the masked one drops
    lay = pi0_layout()
    box = lay.select(camera="base_0_rgb", patches=(slice(2, 5), slice(3, 7)))
    assert box.tolist() == [r * 16 + c for r in range(2, 5) for c in range(3, 7)]
    with pytest.raises(FlowlensError, match=r"patches mask must be bool \[16, 16\]"):
        lay.select(camera="base_0_rgb", patches=np.ones((2, 2), bool))
    with pytest.raises(FlowlensError, match="patch row 16 out of range"):
        lay.select(camera="base_0_rgb", patches=(16, 0))


def test_every_form_resolves_on_pi0_and_the_embedded_model_layout():
    pi0 = pi0_layout()  # 3 × 256 patches (third masked), 48 text tokens, state 816, actions 817-866
    assert resolve_tokens(pi0, "patches:base_0_rgb[2:5,3:7]").size == 12
    assert resolve_tokens(pi0, "cameras").tolist() == list(range(512))
    assert resolve_tokens(pi0, "words:bowl").tolist() == [773]  # <bos> 768, pick up the black bowl
    assert resolve_tokens(pi0, "state").tolist() == [816]
    assert resolve_tokens(pi0, "actions[0:10]").tolist() == list(range(817, 827))
    assert resolve_tokens(pi0, "cameras - patches:base_0_rgb[0:2,:]").tolist() == list(range(32, 512))
    # the embedded tabletop model: Pi0.5-style, 2 cameras of 4×4 patches, 20 text tokens, 10 actions
    emb = openpi_layout(variant="pi05", prompt="put the red cube in the bowl", max_token_len=20, action_horizon=10,
                        cameras=("base_0_rgb", "left_wrist_0_rgb"), camera_valid=(True, True), grid=(4, 4),
                        state_token=False)
    assert resolve_tokens(emb, "patches:left_wrist_0_rgb[3,:]").tolist() == [28, 29, 30, 31]
    assert resolve_tokens(emb, "words:red | actions[-1]").tolist() == [35, 61]
    assert resolve_tokens(emb, "camera:left_wrist_0_rgb").tolist() == list(range(16, 32))
    with pytest.raises(FlowlensError, match="selection='state': group='state' is not known; expected a group"):
        resolve_tokens(emb, "state")


@pytest.mark.parametrize("text, match", [
    ("wrds", r"key='wrds': group='wrds' is not known; expected a group.*Did you mean 'words'\?"),
    ("camera:basee", r"camera='basee' is not known.*Did you mean 'base_0_rgb'\?"),
    ("words:bowel", r"word 'bowel' is not in the prompt.*Did you mean 'bowl'\?"),
    ("actions[7]", "horizon 7 out of range: the action chunk has 3 tokens"),
    ("words[9:12]", "selects no prompt word"),
    ("tokens[99]", "has token 99, but the layout has 20 tokens"),
    ("left_wrist_0_rgb", "selects no valid token.*masked cameras and padding"),
    ("words - words", "selects no valid token"),
    ("(words", r"'\(' is not closed"),
    ("words |", "ends where a name was expected"),
    ("| words", "'\\|' where a name was expected"),
    ("words state", "unexpected 'state'"),
    ("x[1]", "is not an indexable selection"),
    ("foo:bar", "'foo': is not a known prefix"),
    ("patches:base_0_rgb[1]", "needs two ranges"),
    ("actions[a:b]", "must hold ints or slices"),
    ("words # x", "unexpected '#'"),
])
def test_bad_selections_name_the_problem_and_a_fix(text, match):
    with pytest.raises(FlowlensError, match=match):
        resolve_tokens(LAY, text, argument="key")


def test_bad_selection_types():
    with pytest.raises(FlowlensError, match="query must be a token selection: a selection string"):
        resolve_tokens(LAY, 3.5, argument="query")
    with pytest.raises(FlowlensError, match="non-empty string"):
        resolve_tokens(LAY, "  ")
    with pytest.raises(FlowlensError, match="query must be a token selection: a selection string"):
        resolve_tokens(LAY, [], argument="query")


def test_query_parser_takes_selections():
    assert select_query(LAY, "words:red | state").tolist() == [11, 16]
    assert select_query(LAY, Selection.actions(0)).tolist() == [17]
    assert select_query(LAY, "action:2").tolist() == [19]  # query names keep their meaning
    with pytest.raises(FlowlensError, match="Did you mean 'actions'"):
        select_query(LAY, "actons")


def test_index_sets():
    assert index_set("layers", "all", 4) == (0, 1, 2, 3)
    assert index_set("layers", None, 2) == (0, 1)
    assert index_set("layers", "9-17", 18) == tuple(range(9, 18))
    assert index_set("layers", "9:18", 18) == tuple(range(9, 18))
    assert index_set("heads", "0,3,5", 8) == (0, 3, 5)
    assert index_set("steps", "0-2,7", 10) == (0, 1, 2, 7)
    assert index_set("layers", -1, 18) == (17,)
    assert index_set("layers", range(2, 4), 18) == (2, 3)
    assert index_set("layers", [5, 1, 5], 18) == (1, 5)
    assert index_set("layers", slice(None, None, 6), 18) == (0, 6, 12)


@pytest.mark.parametrize("spec, match", [
    ("18", r"layers: layers 18 out of range: there are 18 layers \(0–17\); e.g. layers='0-17'"),
    ("3-1", "'3-1' is not an int, an inclusive range"),
    ("x", "'x' is not an int"),
    ([1.5], "layers must hold ints"),
    ([], "selects no layers"),
    (True, "must be 'all', ints or ranges"),
    ("5:2", "selects no layers"),
])
def test_bad_index_sets(spec, match):
    with pytest.raises(FlowlensError, match=match):
        index_set("layers", spec, 18)
