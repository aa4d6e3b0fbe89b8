"""Selections: the one language for "which tokens", "which layers / heads / denoising steps".

Routing tables, path decompositions, knockouts, patching and hypotheses all name token sets the
same way, as a string a user can type (CLI, hypothesis files) or as a composable ``Selection``.
Every leaf is resolved by ``TokenLayout.select`` (valid tokens only: masked cameras and padding
are never selected), so names, ranges and did-you-mean errors are the layout's.

String spelling (names case-sensitive, prompt words matched case-insensitively, spaces optional)::

    words | state | actions | bos | newline | base_0_rgb      a group of TokenLayout.groups()
    cameras   all   prefix   suffix                            every camera / valid token / part
    camera:base_0_rgb   camera:base_0_rgb,left_wrist_0_rgb     cameras by name
    words:cup   words:red,cup   words:0,3   words[1:3]         prompt words by text or word index
    patches:base_0_rgb[2:5,3:7]   patches:base_0_rgb[0,:]      a box of a camera's patch grid
    actions[0:10]   actions[3]   actions[-1]   action:3   a3   last      action tokens by index
    tokens[3,7,10:12]                                          layout token indices
    a | b   a & b   a - b   (a | b) - c                        union, intersection, difference

``&`` binds tighter than ``|`` and ``-``, which group left to right; parentheses override.
Index brackets take ints and Python slices (``start:stop``, stop exclusive, clipped as in Python),
comma separated.

    >>> from flowlens.testing import toy_layout
    >>> lay = toy_layout()   # base_0_rgb 0-3 (2×2 grid), masked camera 4-7, prompt 8-15, state 16, actions 17-19
    >>> resolve_tokens(lay, "words:red").tolist(), resolve_tokens(lay, "actions[0:2] | state").tolist()
    ([11], [16, 17, 18])
    >>> resolve_tokens(lay, "cameras - patches:base_0_rgb[0,:]").tolist()
    [2, 3]
    >>> sel = Selection.words("pick", "bowl") | Selection.group("state")
    >>> resolve_tokens(lay, sel).tolist(), str(sel)
    ([9, 12, 16], 'words:pick,bowl | state')

Index sets for layers, heads and denoising steps: ``"all"``, ``"9-17"`` (inclusive), ``"9:18"``
(a slice), ``"0,3,5"``, mixes (``"0-2,7"``), an int, a range or a list of ints, checked against
the model's size:

    >>> index_set("layers", "0-2,7", 18), index_set("heads", "all", 3)
    ((0, 1, 2, 7), (0, 1, 2))
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

import numpy as np

from flowlens.core.index_sets import index_set
from flowlens.core.layout import TokenLayout
from flowlens.core.segments import TokenKind
from flowlens.errors import FlowlensError, did_you_mean, short_text

__all__ = ["PARTS", "Selection", "as_selection", "index_set", "parse_selection", "resolve_mask", "resolve_tokens",
           "selection_label"]

PARTS = ("all", "cameras", "prefix", "suffix")  # names beyond TokenLayout.groups()
_OPS = "|&-"
_ATOM = re.compile(r"[^\s|&()\[\]-]+(?:\[[^\]]*\])?")
_ACTION = re.compile(r"^(?:action:|a)(-?\d+)$")
_BRACKET = re.compile(r"^([^\[]+)\[([^\]]*)\]$")


@dataclasses.dataclass(frozen=True, eq=False)
class Selection:
    """A token selection: a leaf (``kind`` + ``args``) or a combination of two selections.

    Build leaves with the class methods (``group``, ``camera``, ``words``, ``patches``, ``actions``,
    ``tokens``) or ``Selection.parse(text)``; combine with ``|`` (union), ``&`` (intersection) and
    ``-`` (difference). ``str(sel)`` is the string spelling (it parses back to the same selection).

    Attributes:
      kind: "group", "camera", "words", "patches", "actions", "tokens", or an operator "|", "&", "-".
      args: the leaf's arguments, or the two operands of an operator.
    """

    kind: str
    args: tuple

    # ---- constructors -------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> Selection:
        """The selection a string spells (see the module docstring)."""
        return parse_selection(text)

    @classmethod
    def group(cls, name: str) -> Selection:
        """A group of ``TokenLayout.groups()`` ("words", "state", a camera ...) or "all" / "cameras" /
        "prefix" / "suffix"."""
        return cls("group", (str(name),))

    @classmethod
    def camera(cls, *names: str) -> Selection:
        return cls("camera", tuple(str(n) for n in names))

    @classmethod
    def words(cls, *words: str | int | slice) -> Selection:
        """Prompt words by text (case-insensitive, every occurrence), word index, or a slice of indices."""
        return cls("words", tuple(words))

    @classmethod
    def patches(cls, camera: str, rows=slice(None), cols=slice(None), *, mask: np.ndarray | None = None) -> Selection:
        """A box ``rows × cols`` (ints / slices / ranges) of ``camera``'s patch grid, or a bool
        ``mask`` [grid_rows, grid_cols]."""
        box = np.asarray(mask, dtype=bool) if mask is not None else (rows, cols)
        return cls("patches", (str(camera), box))

    @classmethod
    def actions(cls, index: int | slice | Iterable[int] = slice(None)) -> Selection:
        """Action tokens by horizon index, slice or indices (negative from the last)."""
        return cls("actions", (index if isinstance(index, (int, slice)) else tuple(int(i) for i in index),))

    @classmethod
    def tokens(cls, indices: Iterable[int]) -> Selection:
        """Layout token indices."""
        return cls("tokens", (tuple(int(i) for i in np.asarray(list(indices)).reshape(-1)),))

    # ---- combinators --------------------------------------------------------------------
    def __or__(self, other: Selection | str) -> Selection:
        return Selection("|", (self, as_selection(other)))

    def __and__(self, other: Selection | str) -> Selection:
        return Selection("&", (self, as_selection(other)))

    def __sub__(self, other: Selection | str) -> Selection:
        return Selection("-", (self, as_selection(other)))

    def __str__(self) -> str:
        if self.kind in _OPS:
            a, b = (_operand(x, self.kind, right) for x, right in zip(self.args, (False, True), strict=True))
            return f"{a} {self.kind} {b}"
        return _leaf_text(self)

    def __repr__(self) -> str:
        return f"Selection({str(self)!r})"

    # ---- resolution ---------------------------------------------------------------------
    def mask(self, layout: TokenLayout) -> np.ndarray:
        """bool [token]: the valid tokens of ``layout`` this selection names (may be empty)."""
        if self.kind in _OPS:
            a, b = (x.mask(layout) for x in self.args)
            return a | b if self.kind == "|" else a & b if self.kind == "&" else a & ~b
        out = np.zeros(layout.n, dtype=bool)
        out[_leaf_tokens(self, layout)] = True
        return out & layout.valid


def _operand(sel: Selection, parent: str, right: bool) -> str:
    """An operand's text, parenthesised where precedence (``&`` over ``|`` / ``-``, left to right) needs it."""
    text = str(sel)
    if sel.kind not in _OPS or sel.kind == "&" and parent != "&":
        return text
    bare = parent != "&" and not right  # left operand of | or -: left-to-right grouping holds
    return text if bare or (parent == "&" and sel.kind == "&" and not right) else f"({text})"


def _fmt_index(v) -> str:
    if isinstance(v, slice):
        a = "" if v.start is None else str(v.start)
        b = "" if v.stop is None else str(v.stop)
        return f"{a}:{b}" + ("" if v.step is None else f":{v.step}")
    if isinstance(v, range):
        return _fmt_index(slice(v.start, v.stop, None if v.step == 1 else v.step))
    return str(int(v))


def _leaf_text(sel: Selection) -> str:
    kind, args = sel.kind, sel.args
    if kind == "group":
        return args[0]
    if kind == "camera":
        return "camera:" + ",".join(args)
    if kind == "words":
        if len(args) == 1 and isinstance(args[0], slice):
            return f"words[{_fmt_index(args[0])}]"
        return "words:" + ",".join(str(w) for w in args)
    if kind == "patches":
        cam, box = args
        if isinstance(box, np.ndarray):
            return f"patches:{cam}<mask of {int(box.sum())}>"
        return f"patches:{cam}[{_fmt_index(box[0])},{_fmt_index(box[1])}]"
    if kind == "actions":
        idx = args[0]
        inner = _fmt_index(idx) if isinstance(idx, (int, slice)) else ",".join(map(str, idx))
        return "actions" if inner == ":" else f"actions[{inner}]"
    return "tokens[" + ",".join(map(str, args[0])) + "]"


def _leaf_tokens(sel: Selection, layout: TokenLayout) -> np.ndarray:
    """int [k] tokens of a leaf; names and ranges are checked by ``TokenLayout.select``."""
    kind, args = sel.kind, sel.args
    if kind == "group":
        name = args[0]
        if name in PARTS:
            return _part(layout, name)
        groups = layout.groups()
        if name not in groups:
            cams = [c.name for c in layout.cameras]
            known = list(groups) + [c for c in cams if c not in groups] + list(PARTS)
            if name in cams:
                return np.zeros(0, dtype=np.int64)  # a masked camera: no valid token
            raise FlowlensError(
                f"group={name!r} is not known; expected a group of this layout {known}, or a form "
                f"such as 'words:cup', 'patches:<camera>[r0:r1,c0:c1]', 'actions[0:10]'."
                f"{did_you_mean(name, known)}")
        return groups[name]
    if kind == "camera":
        return _lenient(layout, camera=list(args))
    if kind == "words":
        text = layout.text
        words = []
        for w in args:
            if isinstance(w, slice):
                words += list(range(len(text.words if text is not None else ()))[w])
            else:
                words.append(w)
        if not words:
            raise FlowlensError(f"{_leaf_text(sel)} selects no prompt word; the prompt has "
                                f"{len(text.words) if text is not None else 0} words.")
        return layout.select(words=words)
    if kind == "patches":
        return _lenient(layout, camera=args[0], patches=args[1])
    if kind == "actions":
        return layout.select(horizon=args[0])
    if kind == "tokens":
        idx = np.asarray(args[0], dtype=np.int64)
        bad = idx[(idx < 0) | (idx >= layout.n)]
        if bad.size:
            raise FlowlensError(
                f"tokens[...] has token {int(bad[0])}, but the layout has {layout.n} tokens (0–{layout.n - 1}).")
        return idx
    raise FlowlensError(f"unknown selection kind {kind!r}.")


def _lenient(layout: TokenLayout, **criteria) -> np.ndarray:
    """``layout.select`` that returns no token (instead of raising) when only masked tokens match."""
    idx = layout.select(valid_only=False, **criteria)
    return idx[layout.valid[idx]]


def _part(layout: TokenLayout, name: str) -> np.ndarray:
    if name == "all":
        return np.arange(layout.n)
    if name == "cameras":
        return np.flatnonzero(layout.kinds == TokenKind.IMAGE.value)
    if name == "prefix":
        return np.arange(layout.prefix_len)
    return np.arange(layout.prefix_len, layout.n)


# ---- parsing ------------------------------------------------------------------------------
def parse_selection(text: str) -> Selection:
    """Parse the string spelling of a selection (grammar in the module docstring).

    Raises:
      FlowlensError: malformed text (unbalanced parentheses, a dangling operator, a bad bracket),
        naming the position and the accepted forms. Names are checked later, against a layout.
    """
    if not isinstance(text, str) or not text.strip():
        raise FlowlensError(
            f"selection must be a non-empty string such as 'words | state' or 'actions[0:10]', got {text!r}.")
    tokens = _lex(text)
    sel, pos = _parse_expr(tokens, 0, text)
    if pos != len(tokens):
        raise _syntax(text, f"unexpected {tokens[pos]!r}")
    return sel


def _syntax(text: str, what: str) -> FlowlensError:
    return FlowlensError(
        f"selection {short_text(text)} is malformed: {what}. Write names combined with |, &, - and "
        "parentheses, e.g. 'words | state', 'cameras - patches:base_0_rgb[0:2,:]', 'actions[0:10]'.")


def _lex(text: str) -> list[str]:
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in _OPS + "()":
            out.append(ch)
            i += 1
        elif m := _ATOM.match(text, i):
            out.append(m.group(0))
            i = m.end()
        else:
            raise _syntax(text, f"unexpected {ch!r} at position {i}")
    return out


def _parse_expr(tokens: list[str], pos: int, text: str) -> tuple[Selection, int]:
    left, pos = _parse_term(tokens, pos, text)
    while pos < len(tokens) and tokens[pos] in "|-":
        op = tokens[pos]
        right, pos = _parse_term(tokens, pos + 1, text)
        left = Selection(op, (left, right))
    return left, pos


def _parse_term(tokens: list[str], pos: int, text: str) -> tuple[Selection, int]:
    left, pos = _parse_atom(tokens, pos, text)
    while pos < len(tokens) and tokens[pos] == "&":
        right, pos = _parse_atom(tokens, pos + 1, text)
        left = Selection("&", (left, right))
    return left, pos


def _parse_atom(tokens: list[str], pos: int, text: str) -> tuple[Selection, int]:
    if pos >= len(tokens):
        raise _syntax(text, "it ends where a name was expected")
    tok = tokens[pos]
    if tok == "(":
        sel, pos = _parse_expr(tokens, pos + 1, text)
        if pos >= len(tokens) or tokens[pos] != ")":
            raise _syntax(text, "a '(' is not closed")
        return sel, pos + 1
    if tok in _OPS + ")":
        raise _syntax(text, f"{tok!r} where a name was expected")
    return _atom(tok, text), pos + 1


def _atom(tok: str, text: str) -> Selection:
    if m := _ACTION.match(tok):
        return Selection.actions(int(m.group(1)))
    if tok == "last":
        return Selection.actions(-1)
    head, bracket = tok, None
    if m := _BRACKET.match(tok):
        head, bracket = m.group(1), _indices(m.group(2), text)
    name, _, rest = head.partition(":")
    if name == "patches" and rest:
        if bracket is None:
            return Selection.patches(rest)
        if len(bracket) != 2:
            raise _syntax(text, f"patches:{rest}[...] needs two ranges, rows and columns, got {len(bracket)}")
        return Selection.patches(rest, *bracket)
    if bracket is not None:
        if rest:
            raise _syntax(text, f"{tok!r} mixes ':' names and a [...] index")
        if name == "actions":
            return Selection.actions(bracket[0] if len(bracket) == 1 else tuple(_ints(bracket, tok, text)))
        if name == "words":
            return Selection.words(*bracket)
        if name == "tokens":
            return Selection.tokens(_ints(bracket, tok, text, allow_slices=True))
        raise _syntax(text, f"{name!r}[...] is not an indexable selection (actions, words, tokens, patches:<camera>)")
    if rest:
        items = [x for x in rest.split(",") if x]
        if name in ("words", "word"):
            return Selection.words(*(int(x) if re.fullmatch(r"-?\d+", x) else x for x in items))
        if name in ("camera", "cameras"):
            return Selection.camera(*items)
        raise _syntax(text, f"{name!r}: is not a known prefix (camera:, words:, patches:, action:)")
    return Selection.group(name)


def _indices(inner: str, text: str) -> list:
    out: list = []
    for part in inner.split(","):
        part = part.strip()
        try:
            if ":" in part:
                bits = [int(b) if b.strip() else None for b in part.split(":")]
                if len(bits) > 3:
                    raise ValueError
                out.append(slice(*bits))
            else:
                out.append(int(part))
        except ValueError:
            raise _syntax(text, f"[{inner}] must hold ints or slices such as 0:10") from None
    return out


def _ints(items: list, tok: str, text: str, allow_slices: bool = False) -> list[int]:
    out: list[int] = []
    for x in items:
        if isinstance(x, slice):
            if not allow_slices or x.start is None or x.stop is None:
                raise _syntax(text, f"{tok!r} mixes slices and indices; use one slice or a list of ints")
            out += list(range(x.start, x.stop, x.step or 1))
        else:
            out.append(x)
    return out


# ---- resolution ---------------------------------------------------------------------------
def as_selection(value, argument: str = "selection") -> Selection:
    """A Selection from a Selection, a selection string, or a list of group names / token indices."""
    if isinstance(value, Selection):
        return value
    if isinstance(value, str):
        return parse_selection(value)
    if isinstance(value, np.ndarray) and value.dtype == bool:
        return Selection.tokens(np.flatnonzero(value))
    items = list(value.tolist() if isinstance(value, np.ndarray) else value) if isinstance(
        value, (list, tuple, np.ndarray, range)) else None
    if items and all(isinstance(s, str) for s in items):
        out = parse_selection(items[0])
        for s in items[1:]:
            out = out | parse_selection(s)
        return out
    if items and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in items):
        return Selection.tokens(items)
    raise FlowlensError(
        f"{argument} must be a token selection: a selection string ('words | state', 'actions[0:10]' ...), a "
        f"Selection, a list of group names or a non-empty list of token indices; got {value!r}.")


def resolve_mask(layout: TokenLayout, selection, *, argument: str = "selection") -> np.ndarray:
    """bool [token]: the valid tokens ``selection`` names; an empty result raises FlowlensError."""
    sel = as_selection(selection, argument)
    try:
        mask = sel.mask(layout)
    except FlowlensError as err:
        raise FlowlensError(f"{argument}={str(sel)!r}: {err}") from None
    if not mask.any():
        raise FlowlensError(
            f"{argument}={str(sel)!r} selects no valid token of this layout (masked cameras and padding are "
            "never selected); widen it, e.g. drop a '-' or '&' part.")
    return mask


def resolve_tokens(layout: TokenLayout, selection, *, argument: str = "selection") -> np.ndarray:
    """int64 [k]: sorted layout indices of the valid tokens ``selection`` names.

    Args:
      layout: the layout the names refer to.
      selection: a selection string, a ``Selection``, a list of group names, token indices or a bool
        mask [token].
      argument: the caller's argument name, for messages.
    Raises:
      FlowlensError: malformed text, unknown names (with a suggestion), out-of-range indices, or a
        selection with no valid token.
    """
    return np.flatnonzero(resolve_mask(layout, selection, argument=argument)).astype(np.int64)


def selection_label(selection) -> str:
    """The string spelling of a selection (a table label)."""
    if isinstance(selection, (Selection, str)):
        return str(selection) if isinstance(selection, Selection) else selection.strip()
    return str(as_selection(selection))
