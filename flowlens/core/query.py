"""Query selections: which tokens ask, by name — the one spelling shared by ``--query`` and ``query=``.

A query is given either as layout token indices or as a selection the layout understands:

- ``"action:<i>"`` (also ``"a<i>"``, ``"action<i>"``; negative counts from the last): one action token;
- ``"actions"``: every action token; ``"last"``: the last action token;
- ``"state"``: Pi0's state token (Pi0.5 has none: its state is in the prompt);
- any other selection of :mod:`flowlens.core.selection` (``"words:cup | state"``, a ``Selection``).

``parse_query`` normalises a spelling; ``select_query`` turns a query (name or indices) into token
indices of a layout. The CLI's ``--query``, ``AnalysisSpec`` and the analyses (``rollout``, ``flow``,
``head_stats`` ...) all resolve queries here.

    >>> from flowlens.core.openpi_layout import pi0_layout
    >>> lay = pi0_layout()
    >>> parse_query("A3"), select_query(lay, "action:3").tolist() == [lay.actions.start + 3]
    ('action:3', True)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from flowlens.core.checks import index_array
from flowlens.core.layout import TokenLayout
from flowlens.core.selection import PARTS, Selection, resolve_tokens
from flowlens.errors import FlowlensError, did_you_mean

QUERY_FORMS = ("action:0", "action:<i>", "actions", "last", "state")
_ACTION = re.compile(r"^(?:action|a):?(-?\d+)$")
_SELECTION_SYNTAX = re.compile(r"[|&()\[\]:-]")


def parse_query(text: str) -> str:
    """Normalise a query spelling: "action:3" / "a3" → "action:3"; "actions", "last", "state" as is.

    Raises:
      FlowlensError: anything else, listing the accepted forms.
    """
    q = str(text).strip().lower()
    if q in ("actions", "last", "state"):
        return q
    if m := _ACTION.match(q):
        return f"action:{int(m.group(1))}"
    raise FlowlensError(
        f"query={text!r} is not known; expected one of {list(QUERY_FORMS)} (e.g. 'action:0' for the first "
        "action token, 'actions' for all of "
        f"them).{did_you_mean(q, ('actions', 'last', 'state', 'action:0'))}"
    )


def _named_tokens(layout: TokenLayout, query: str) -> np.ndarray:
    act = layout.actions
    if query == "state":
        if layout.state is None:
            raise FlowlensError(
                f"query 'state' needs a state token, but this {layout.variant} layout has none "
                "(Pi0.5 puts the state into the prompt); query 'action:0' or 'actions' instead "
                "(--query action:0 on the command line)."
            )
        return layout.select(kind="state")
    if act is None:
        raise FlowlensError(f"query {query!r} needs action tokens, but this layout has none.")
    if query == "actions":
        return layout.select(kind="action")
    if query == "last":
        return np.array([act.stop - 1], dtype=np.int64)
    index = int(query.split(":")[1])
    if not -act.size <= index < act.size:
        raise FlowlensError(
            f"query {query!r} out of range: the action chunk has {act.size} tokens "
            f"(valid: action:0 … action:{act.size - 1})."
        )
    return np.array([act.start + index % act.size], dtype=np.int64)


def select_query(layout: TokenLayout, query: str | int | Sequence[int] | np.ndarray | None = None,
                 **select) -> np.ndarray:
    """Token indices of a query over ``layout``.

    Args:
      layout: the token layout the query refers to.
      query: a query name (see the module docstring: "action:0", "actions", "last", "state"), a
        selection string or ``Selection`` (``flowlens.core.selection``),
        layout token index / indices (ints, returned as given; the caller checks they are nodes /
        rows) or a bool mask with one flag per layout token. Floats (1.7, even 1.0) are refused.
      **select: instead of ``query``, ``layout.select`` keywords (``kind=``, ``horizon=``, ``group=``
        ...). With neither: every action token.
    Returns:
      int64 [query] layout token indices.
    Raises:
      FlowlensError: unknown name (with a suggestion), a name the layout cannot serve (no state
        token, action index out of range), indices that are not a flat list of ints (or a mask of
        ``layout.n`` bools), or both
        ``query`` and keywords.
    """
    if query is None:
        return layout.select(**select) if select else layout.select(kind="action")
    if select:
        raise FlowlensError("give either query (token indices or a query name) or selection keywords, not both.")
    if isinstance(query, Selection):
        return resolve_tokens(layout, query, argument="query")
    if isinstance(query, str):
        try:
            name = parse_query(query)
        except FlowlensError:
            text = query.strip()
            if _SELECTION_SYNTAX.search(text) or text in layout.groups() or text in PARTS:
                return resolve_tokens(layout, text, argument="query")
            raise
        return _named_tokens(layout, name)
    return index_array("query", query, size=layout.n,
                       expected=f"a query name {list(QUERY_FORMS)} or a non-empty list of token indices")
