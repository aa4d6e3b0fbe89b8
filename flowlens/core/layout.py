"""TokenLayout: the typed, ordered segments of one Pi0 / Pi0.5 token sequence.

A layout says what every position of the sequence *is*: an image patch of a named camera
(with its grid cell and pixel box), a prompt token (id, SentencePiece piece, the word it belongs
to, or a special role: BOS, the "\\n" answer marker, padding), the robot-state token, or an action
token (its horizon index). It carries validity (masked cameras, text padding), the attention
blocks of openpi's block-causal mask, and the RoPE positions (``cumsum(valid) - 1``).

Layouts are built by the model adapter from the real inputs; ``pi0_layout`` / ``pi05_layout``
(:mod:`flowlens.core.openpi_layout`) build the exact openpi LIBERO layouts for synthetic data.
The segment types live in :mod:`flowlens.core.segments` (re-exported here).

Token *groups* are the units results are reported in: one group per camera, ``words`` (prompt
words), ``bos``, ``newline``, ``state``, ``actions``. Invalid tokens belong to no group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from flowlens.core.frame import FrameTransform
from flowlens.core.segments import (
    _SEGMENT_TYPES,
    SPECIAL_ROLES,
    WORD_START,
    ActionSegment,
    ImageSegment,
    Segment,
    StateSegment,
    TextSegment,
    TokenKind,
)
from flowlens.errors import FlowlensError, did_you_mean, unknown_name_error

# The segment types are re-exported: a layout is read together with its segments.
__all__ = ["SPECIAL_ROLES", "WORD_START", "ActionSegment", "ImageSegment", "Segment", "StateSegment",
           "TextSegment", "TokenKind", "TokenLayout"]


@dataclasses.dataclass(frozen=True, eq=False)
class TokenLayout:
    """Typed segments covering ``[0, n)`` in order, split into prefix ``[0, prefix_len)`` and suffix.

    Attributes:
      segments: the segments, contiguous and ordered.
      prefix_len: number of prefix tokens (images + text); the rest is the suffix.
      variant: model family ("pi0", "pi05", or a free name for other layouts).
    """

    segments: tuple[Segment, ...]
    prefix_len: int
    variant: str = "pi0"

    def __post_init__(self) -> None:
        pos = 0
        names = set()
        for seg in self.segments:
            if seg.start != pos or seg.stop < seg.start:
                raise FlowlensError(
                    f"segments must be contiguous from 0; segment {seg.name!r} spans "
                    f"[{seg.start}, {seg.stop}) but the previous one ended at {pos}."
                )
            if seg.name in names:
                raise FlowlensError(f"segment names must be unique; {seg.name!r} appears twice.")
            names.add(seg.name)
            pos = seg.stop
        if not 0 < self.prefix_len <= pos:
            raise FlowlensError(f"prefix_len must be in 1..{pos}, got {self.prefix_len}.")

    # ---- basic arrays -------------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.segments[-1].stop

    @property
    def suffix_len(self) -> int:
        return self.n - self.prefix_len

    @property
    def valid(self) -> np.ndarray:
        """bool [token]: False for masked-camera patches and text padding."""
        return np.concatenate([s.valid_mask() for s in self.segments])

    @property
    def blocks(self) -> np.ndarray:
        """int [token]: attention block id of each token."""
        return np.concatenate([np.full(s.size, s.block) for s in self.segments])

    @property
    def positions(self) -> np.ndarray:
        """int [token]: RoPE positions, ``cumsum(valid) - 1`` (masked tokens do not advance)."""
        return np.cumsum(self.valid) - 1

    @property
    def kinds(self) -> np.ndarray:
        """str [token]: the TokenKind value of each token."""
        return np.concatenate([np.full(s.size, s.kind.value, dtype=object) for s in self.segments])

    def attention_mask(self) -> np.ndarray:
        """bool [query, key]: openpi's block-causal mask (query i may attend key j)."""
        b, v = self.blocks, self.valid
        return (b[None, :] <= b[:, None]) & v[:, None] & v[None, :]

    # ---- segments -----------------------------------------------------------------------
    def segment(self, name: str) -> Segment:
        for seg in self.segments:
            if seg.name == name:
                return seg
        raise unknown_name_error("segment", name, [s.name for s in self.segments])

    def segments_of(self, kind: TokenKind | str) -> tuple[Segment, ...]:
        kind = _as_kind(kind)
        return tuple(s for s in self.segments if s.kind == kind)

    @property
    def cameras(self) -> tuple[ImageSegment, ...]:
        return self.segments_of(TokenKind.IMAGE)  # type: ignore[return-value]

    @property
    def text(self) -> TextSegment | None:
        segs = self.segments_of(TokenKind.TEXT)
        return segs[0] if segs else None  # type: ignore[return-value]

    @property
    def actions(self) -> ActionSegment | None:
        segs = self.segments_of(TokenKind.ACTION)
        return segs[0] if segs else None  # type: ignore[return-value]

    @property
    def state(self) -> StateSegment | None:
        segs = self.segments_of(TokenKind.STATE)
        return segs[0] if segs else None  # type: ignore[return-value]

    def segment_of_token(self, token: int) -> Segment:
        for seg in self.segments:
            if seg.start <= token < seg.stop:
                return seg
        raise FlowlensError(f"token {token} out of range: this layout has {self.n} tokens (0–{self.n - 1}).")

    # ---- groups and selection -----------------------------------------------------------
    def groups(self) -> dict[str, np.ndarray]:
        """Named groups of *valid* token indices, in sequence order.

        One per valid camera (its name), then "bos", "words", "newline" (those present), "state",
        "actions". Masked cameras and padding belong to no group.
        """
        out: dict[str, np.ndarray] = {}
        for seg in self.segments:
            if isinstance(seg, TextSegment):
                roles = np.asarray(seg.roles)
                for role in ("bos", "words", "newline", "eos"):
                    want = roles == ("" if role == "words" else role)
                    if want.any():
                        out[role] = seg.start + np.flatnonzero(want)
            else:
                idx = seg.indices[seg.valid_mask()]
                if idx.size:
                    out[seg.name] = idx
        return out

    def token_labels(self) -> list[str]:
        """A short human label per token: "base_0_rgb[3,7]", "black", "<bos>", "state", "a12"."""
        labels: list[str] = []
        for seg in self.segments:
            if isinstance(seg, ImageSegment):
                labels += [f"{seg.name}[{i // seg.grid[1]},{i % seg.grid[1]}]" for i in range(seg.size)]
            elif isinstance(seg, TextSegment):
                for piece, role in zip(seg.pieces, seg.roles, strict=True):
                    labels.append({"bos": "<bos>", "newline": "\\n", "pad": "<pad>", "eos": "<eos>"}.get(
                        role, piece.replace(WORD_START, "")))
            elif isinstance(seg, ActionSegment):
                labels += [f"a{h}" for h in range(seg.size)]
            else:
                labels += [seg.name] * seg.size
        return labels

    def select(
        self,
        *,
        kind: TokenKind | str | None = None,
        camera: str | Iterable[str] | None = None,
        words: str | int | Iterable[str | int] | None = None,
        horizon: int | slice | Iterable[int] | None = None,
        group: str | Iterable[str] | None = None,
        patches: tuple | np.ndarray | None = None,
        valid_only: bool = True,
    ) -> np.ndarray:
        """Token indices matching every given criterion (sorted, int64 [k]).

        Args:
          kind: "image", "text", "state" or "action".
          camera: camera name(s); implies image tokens.
          words: prompt word(s) by text (case-insensitive; all occurrences) or by word index;
            implies text tokens. Every piece of a matched word is selected.
          horizon: action index / indices / slice; implies action tokens.
          group: name(s) from ``groups()`` ("bos", "words", "newline", a camera, "state", "actions").
          patches: a box of the patch grid, ``(rows, cols)`` with each an int, a slice or a range of
            grid rows / columns, or a bool mask ``[grid_rows, grid_cols]``; implies image tokens and
            applies to every chosen camera (``camera=``; default every camera).
          valid_only: drop masked-camera patches and padding (default).

        Raises:
          FlowlensError: unknown camera / word / group (with a suggestion), horizon out of range,
            or a selection that matches no token.
        """
        keep = np.ones(self.n, dtype=bool)
        if kind is not None:
            keep &= self.kinds == _as_kind(kind).value
        if camera is not None:
            cams = [camera] if isinstance(camera, str) else list(camera)
            names = [c.name for c in self.cameras]
            sel = np.zeros(self.n, dtype=bool)
            for cam in cams:
                if cam not in names:
                    raise unknown_name_error("camera", cam, names)
                seg = self.segment(cam)
                sel[seg.start:seg.stop] = True
            keep &= sel
        if words is not None:
            keep &= self._word_mask(words)
        if horizon is not None:
            act = self.actions
            if act is None:
                raise FlowlensError("horizon was given but this layout has no action tokens.")
            hs = np.arange(act.size)
            if isinstance(horizon, slice):
                chosen = hs[horizon]
            else:
                chosen = np.atleast_1d(np.asarray(list(horizon) if not np.isscalar(horizon) else horizon))
                bad = [int(h) for h in chosen if not -act.size <= int(h) < act.size]
                if bad:
                    raise FlowlensError(
                        f"horizon {bad[0]} out of range: the action chunk has {act.size} tokens "
                        f"(0–{act.size - 1})."
                    )
                chosen = chosen % act.size
            sel = np.zeros(self.n, dtype=bool)
            sel[act.start + chosen] = True
            keep &= sel
        if patches is not None:
            keep &= self._patch_mask(patches, camera)
        if group is not None:
            groups = self.groups()
            sel = np.zeros(self.n, dtype=bool)
            for g in [group] if isinstance(group, str) else list(group):
                if g not in groups:
                    raise unknown_name_error("group", g, list(groups))
                sel[groups[g]] = True
            keep &= sel
        if valid_only:
            keep &= self.valid
        idx = np.flatnonzero(keep)
        if idx.size == 0:
            raise FlowlensError(
                f"the selection kind={kind!r}, camera={camera!r}, words={words!r}, horizon={horizon!r}, "
                f"group={group!r} matches no {'valid ' if valid_only else ''}token of this layout."
            )
        return idx

    def _patch_mask(self, patches, camera) -> np.ndarray:
        """bool [token]: the patch box / mask ``patches`` of each chosen camera (all by default)."""
        cams = [c.name for c in self.cameras] if camera is None else [camera] if isinstance(camera, str) \
            else list(camera)
        sel = np.zeros(self.n, dtype=bool)
        for name in cams:
            seg = self.segment(name)
            rows, cols = seg.grid
            if isinstance(patches, np.ndarray) and patches.dtype == bool:
                if patches.shape != (rows, cols):
                    raise FlowlensError(
                        f"patches mask must be bool [{rows}, {cols}] (camera {name!r}'s patch grid), got shape "
                        f"{patches.shape}.")
                box = patches
            else:
                if not isinstance(patches, tuple) or len(patches) != 2:
                    raise FlowlensError(
                        f"patches must be (rows, cols) of the {rows}×{cols} patch grid (ints, slices or "
                        f"ranges), or a bool [{rows}, {cols}] mask; got {patches!r}.")
                box = np.zeros((rows, cols), dtype=bool)
                box[np.ix_(_grid_range("patch row", patches[0], rows),
                           _grid_range("patch column", patches[1], cols))] = True
            sel[seg.start:seg.stop] = box.reshape(-1)
        return sel

    def _word_mask(self, words) -> np.ndarray:
        text = self.text
        if text is None:
            raise FlowlensError("words were given but this layout has no text segment.")
        wanted = [words] if isinstance(words, (str, int, np.integer)) else list(words)
        word_of = np.asarray(text.word_of_token)
        sel = np.zeros(self.n, dtype=bool)
        lowered = [w.lower() for w in text.words]
        for w in wanted:
            if isinstance(w, (int, np.integer)):
                if not 0 <= int(w) < len(text.words):
                    raise FlowlensError(
                        f"word index {w} out of range: the prompt has {len(text.words)} words "
                        f"(0–{len(text.words) - 1}): {list(text.words)}."
                    )
                hits = [int(w)]
            else:
                hits = [i for i, x in enumerate(lowered) if x == w.lower()]
                if not hits:
                    raise FlowlensError(
                        f"word {w!r} is not in the prompt {list(text.words)}.{did_you_mean(w, text.words)}"
                    )
            sel[text.start + np.flatnonzero(np.isin(word_of, hits))] = True
        return sel

    # ---- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"variant": self.variant, "prefix_len": self.prefix_len,
                "segments": [s.to_dict() for s in self.segments]}

    @classmethod
    def from_dict(cls, d: dict) -> TokenLayout:
        segs = []
        for s in d["segments"]:
            s = dict(s)
            kind = TokenKind(s.pop("kind"))
            if kind == TokenKind.IMAGE:
                s["grid"] = tuple(s["grid"])
                s["transform"] = FrameTransform.from_dict(s["transform"])
            elif kind == TokenKind.TEXT:
                for key in ("token_ids", "pieces", "valid", "roles", "word_of_token", "words"):
                    s[key] = tuple(s[key])
            segs.append(_SEGMENT_TYPES[kind](kind=kind, **s))
        return cls(segments=tuple(segs), prefix_len=int(d["prefix_len"]), variant=d["variant"])

    def __repr__(self) -> str:
        parts = ", ".join(f"{s.name}[{s.start}:{s.stop}]" for s in self.segments)
        return f"TokenLayout({self.variant}, n={self.n}, prefix={self.prefix_len}: {parts})"


def _grid_range(what: str, value, size: int) -> np.ndarray:
    """int [k] grid indices of an int, slice or range over ``size`` (negative ints from the end)."""
    if isinstance(value, slice):
        out = np.arange(size)[value]
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if not -size <= int(value) < size:
            raise FlowlensError(f"{what} {int(value)} out of range: the patch grid has {size} (0–{size - 1}).")
        out = np.array([int(value) % size])
    elif isinstance(value, range):
        out = np.asarray(value, dtype=np.int64)
        if out.size and (out.min() < 0 or out.max() >= size):
            raise FlowlensError(f"{what}s {value} out of range: the patch grid has {size} (0–{size - 1}).")
    else:
        raise FlowlensError(f"{what}s must be an int, a slice or a range, got {value!r}.")
    if out.size == 0:
        raise FlowlensError(f"{what}s {value!r} select nothing of the patch grid's {size} (0–{size - 1}).")
    return out


def _as_kind(kind: TokenKind | str) -> TokenKind:
    if isinstance(kind, TokenKind):
        return kind
    try:
        return TokenKind(kind)
    except ValueError:
        raise unknown_name_error("kind", kind, [k.value for k in TokenKind]) from None

