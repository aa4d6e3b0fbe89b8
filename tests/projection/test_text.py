import numpy as np
import pytest

from flowlens import FlowlensError, word_scores
from flowlens.core.layout import TokenLayout
from flowlens.core.segments import ActionSegment, TextSegment, TokenKind


def tiny_layout():
    text = TextSegment.from_pieces(
        start=0, token_ids=[2, 10, 11, 12, 13, 108, 0, 0],
        pieces=["<bos>", "▁pick", "▁bl", "ack", "▁bowl", "\n", "<pad>", "<pad>"],
        valid=[True] * 6 + [False] * 2)
    act = ActionSegment(kind=TokenKind.ACTION, name="actions", start=8, stop=9, block=1)
    return TokenLayout(segments=(text, act), prefix_len=8)


def test_pieces_merge_and_sinks_are_apart():
    lay = tiny_layout()
    scores = np.array([0.4, 0.1, 0.05, 0.15, 0.2, 0.1, np.nan, np.nan, np.nan])
    ws = word_scores(scores, lay)
    assert ws.words == ("pick", "black", "bowl")
    np.testing.assert_allclose(ws.values, [0.1, 0.2, 0.2])
    assert ws.pieces[1] == ("▁bl", "ack")
    assert ws.specials["bos"] == pytest.approx(0.4) and ws.specials["newline"] == pytest.approx(0.1)
    assert np.isnan(ws.specials["pad"])
    assert ws.ranking()[0][0] == "black" and ws.rank_of("pick") == 2
    assert ws.total_words == pytest.approx(0.5)


def test_errors():
    lay = tiny_layout()
    with pytest.raises(FlowlensError, match=r"scores must be \[9\]"):
        word_scores(np.zeros(3), lay)
    with pytest.raises(FlowlensError, match="not in the prompt"):
        word_scores(np.zeros(9), lay).rank_of("plate")
