"""Query selections (flowlens.core.query): names and indices → layout tokens, literal expectations."""

import numpy as np
import pytest

from flowlens import FlowlensError
from flowlens.core import parse_query, pi0_layout, pi05_layout, select_query
from flowlens.core.graph import check_heads


def test_names_resolve_on_the_pi0_layout():
    lay = pi0_layout()
    act = lay.actions
    assert (act.start, act.stop) == (817, 867)  # the literal Pi0 positions these lines assume
    assert select_query(lay, "action:0").tolist() == [817]
    assert select_query(lay, "A3").tolist() == [820]
    assert select_query(lay, "action:-1").tolist() == [866]
    assert select_query(lay, "last").tolist() == [866]
    assert select_query(lay, "actions").tolist() == list(range(817, 867))
    assert select_query(lay, "state").tolist() == [816]
    assert select_query(lay).tolist() == list(range(817, 867))  # default: every action token
    assert select_query(lay, kind="state").tolist() == [816]
    assert select_query(lay, horizon=[0, 2]).tolist() == [817, 819]


def test_indices_pass_through_as_int64():
    lay = pi0_layout()
    out = select_query(lay, np.array([5, 3], dtype=np.int32))
    assert out.dtype == np.int64 and out.tolist() == [5, 3]
    assert select_query(lay, 7).tolist() == [7]


@pytest.mark.parametrize(("query", "select", "message"), [
    ("actons", {}, r"query='actons' is not known; expected one of .* Did you mean 'actions'\?"),
    ("action:50", {}, r"query 'action:50' out of range: the action chunk has 50 tokens \(valid: action:0 … action:49\)"),
    ([], {}, r"query must be a query name .* or a non-empty list of token indices, got \[\]"),
    ([[1, 2]], {}, r"query must be a query name"),
    ([1.5], {}, r"query must be a query name"),
    ([1], {"horizon": 0}, "give either query .* or selection keywords, not both"),
])
def test_errors_name_the_query(query, select, message):
    with pytest.raises(FlowlensError, match=message):
        select_query(pi0_layout(), query, **select)


def test_pi05_has_no_state_token():
    with pytest.raises(FlowlensError, match="Pi0.5 puts the state into the prompt"):
        select_query(pi05_layout(), "state")
    assert parse_query(" Action7 ") == "action:7"


@pytest.mark.parametrize(("heads", "expected"), [
    ("mean", "mean"), ("max", "max"), (3, 3), (np.int64(2), 2), ([0, 2], [0, 2]), (np.array([1, 3]), [1, 3]),
])
def test_check_heads_accepts(heads, expected):
    assert check_heads(heads) == expected


@pytest.mark.parametrize(("heads", "message"), [
    ("avg", r"^heads='avg' not understood: expected 'mean', 'max', 'min', a head index or a list of heads\.$"),
    ("keep", r"heads='keep' not understood"),
    ("mena", r"Did you mean 'mean'\?"),
    (True, r"heads=True not understood"),
    ([], r"heads=\[\] not understood"),
    (1.5, r"heads=1.5 not understood"),
])
def test_check_heads_rejects(heads, message):
    with pytest.raises(FlowlensError, match=message):
        check_heads(heads)
    assert check_heads("keep", keep=True) == "keep"
