"""TokenLayout: the typed, ordered segments of one Pi0 / Pi0.5 token sequence.

A layout says what every position of the sequence *is*: an image patch of a named camera
(with its grid cell and pixel box), a prompt token (id, SentencePiece piece, the word it belongs
to, or a special role: BOS, the "\\n" answer marker, padding), the robot-state token, or an action
token (its horizon index). It carries validity (masked cameras, text padding), the attention
blocks of openpi's block-causal mask, and the RoPE positions (``cumsum(valid) - 1``).

Layouts are built by the model adapter from the real inputs; ``pi0_layout`` / ``pi05_layout``
build the exact openpi LIBERO layouts (3 cameras × 256 patches, 48 or 200 text tokens, a state
token for Pi0 only, 50 or 10 actions) for synthetic data.

Token *groups* are the units results are reported in: one group per camera, ``words`` (prompt
words), ``bos``, ``newline``, ``state``, ``actions``. Invalid tokens belong to no group.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Sequence

import numpy as np

from flowlens.core.frame import FrameTransform
from flowlens.errors import FlowlensError, did_you_mean, unknown_name_error

PI0_CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
WORD_START = "▁"  # SentencePiece marks the first piece of a word with U+2581.


class TokenKind(enum.StrEnum):
    IMAGE = "image"
    TEXT = "text"
    STATE = "state"
    ACTION = "action"


# Roles of special text tokens; "" marks an ordinary prompt piece.
SPECIAL_ROLES = ("bos", "newline", "pad", "eos")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Segment:
    """A contiguous run ``[start, stop)`` of tokens of one kind.

    Attributes:
      kind: what the tokens are.
      name: unique name in the layout (camera name, "prompt", "state", "actions").
      start, stop: token indices, stop exclusive.
      block: attention block of openpi's block-causal mask; a token sees blocks <= its own.
    """

    kind: TokenKind
    name: str
    start: int
    stop: int
    block: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def indices(self) -> np.ndarray:
        return np.arange(self.start, self.stop)

    def valid_mask(self) -> np.ndarray:
        return np.ones(self.size, dtype=bool)

    def to_dict(self) -> dict:
        d = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, TokenKind):
                v = v.value
            elif isinstance(v, FrameTransform):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = list(v)
            d[f.name] = v
        return d


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageSegment(Segment):
    """Patches of one camera, row-major over a ``grid`` (rows, cols) of ``patch_size`` pixels.

    Attributes:
      grid: (rows, cols) of patches (16×16 for SigLIP So400m/14 at 224).
      patch_size: pixels per patch side in the model input (14).
      valid: False for a masked camera (e.g. the zero right-wrist image in LIBERO).
      transform: how the original frame became the model input.
    """

    grid: tuple[int, int] = (16, 16)
    patch_size: int = 14
    valid: bool = True
    transform: FrameTransform = FrameTransform()

    def valid_mask(self) -> np.ndarray:
        return np.full(self.size, self.valid, dtype=bool)

    def patch_box(self, index: int) -> tuple[float, float, float, float]:
        """(top, left, height, width) in model-input pixels of patch ``index`` (0-based in segment)."""
        r, c = divmod(int(index), self.grid[1])
        p = self.patch_size
        return float(r * p), float(c * p), float(p), float(p)

    def patch_frame_box(self, index: int) -> tuple[float, float, float, float]:
        """The same patch's box in the original frame (empty for letterbox padding)."""
        return self.transform.model_box_to_frame(self.patch_box(index))


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextSegment(Segment):
    """Prompt tokens with their pieces, words and special roles.

    Attributes:
      token_ids: tokenizer ids, one per token.
      pieces: SentencePiece pieces ("▁pick", "up", "<bos>", "\\n", "<pad>").
      valid: the tokenizer mask (False on padding).
      roles: "" for prompt pieces, else one of SPECIAL_ROLES.
      word_of_token: index into ``words`` per token, -1 for special tokens.
      words: the prompt words, pieces merged ("▁bl" + "ack" → "black").
    """

    token_ids: tuple[int, ...]
    pieces: tuple[str, ...]
    valid: tuple[bool, ...]
    roles: tuple[str, ...]
    word_of_token: tuple[int, ...]
    words: tuple[str, ...]

    def valid_mask(self) -> np.ndarray:
        return np.asarray(self.valid, dtype=bool)

    @classmethod
    def from_pieces(
        cls,
        *,
        start: int,
        token_ids: Sequence[int],
        pieces: Sequence[str],
        valid: Sequence[bool],
        block: int = 0,
        name: str = "prompt",
    ) -> TextSegment:
        """Build a text segment from tokenizer output, merging sub-word pieces into words.

        Roles: the first valid token "<bos>" → bos, a "\\n" piece → newline, invalid → pad,
        "<eos>" → eos. A piece starting with "▁" (or following a special token) starts a new word.
        """
        n = len(token_ids)
        if not (len(pieces) == n and len(valid) == n):
            raise FlowlensError(
                f"token_ids, pieces and valid must have equal lengths, got {n}, {len(pieces)}, {len(valid)}."
            )
        roles, word_of, words = [], [], []
        new_word = True
        pending: list[int] = []  # bare "▁" pieces waiting for the word they start
        for i, (piece, ok) in enumerate(zip(pieces, valid, strict=True)):
            role = ""
            if not ok:
                role = "pad"
            elif piece in ("<bos>", "<s>"):
                role = "bos"
            elif piece in ("<eos>", "</s>"):
                role = "eos"
            elif piece.replace(WORD_START, "").strip("\n") == "" and "\n" in piece:
                role = "newline"
            roles.append(role)
            if role:
                word_of.append(-1)
                new_word = True
                continue
            if piece == WORD_START:  # SentencePiece emits a lone word mark, e.g. before digits
                word_of.append(-1)
                pending.append(i)
                new_word = True
                continue
            text = _piece_text(piece)
            if piece.startswith(WORD_START) or new_word or not words:
                words.append(text.strip())
            else:
                words[-1] += text.strip()
            new_word = text.endswith(" ")
            word_of.append(len(words) - 1)
            for j in pending:
                word_of[j] = len(words) - 1
            pending.clear()
        for j in pending:  # a trailing lone mark belongs to the word before it, if any
            word_of[j] = len(words) - 1
        return cls(
            kind=TokenKind.TEXT, name=name, start=start, stop=start + n, block=block,
            token_ids=tuple(int(t) for t in token_ids), pieces=tuple(pieces),
            valid=tuple(bool(v) for v in valid), roles=tuple(roles),
            word_of_token=tuple(word_of), words=tuple(words),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class StateSegment(Segment):
    """The robot-state token of Pi0's suffix (Pi0.5 has none)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ActionSegment(Segment):
    """The action chunk; token ``start + h`` is horizon index ``h``."""

    @property
    def horizon(self) -> int:
        return self.size


def _piece_text(piece: str) -> str:
    """A piece's text with "▁" as a space; byte-fallback pieces ("<0x41>") decoded."""
    if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
        try:
            return bytes.fromhex(piece[3:5]).decode("utf-8", errors="ignore")
        except ValueError:
            return piece
    return piece.replace(WORD_START, " ")


_SEGMENT_TYPES = {TokenKind.IMAGE: ImageSegment, TokenKind.TEXT: TextSegment,
                  TokenKind.STATE: StateSegment, TokenKind.ACTION: ActionSegment}


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


def _as_kind(kind: TokenKind | str) -> TokenKind:
    if isinstance(kind, TokenKind):
        return kind
    try:
        return TokenKind(kind)
    except ValueError:
        raise unknown_name_error("kind", kind, [k.value for k in TokenKind]) from None


# ---- constructors for the openpi layouts ------------------------------------------------
def synthetic_pieces(prompt: str, max_len: int) -> tuple[list[int], list[str], list[bool]]:
    """Tokenise ``prompt`` the way the Pi0 format lays it out, without a real tokenizer.

    BOS, one piece per word ("▁word"; words longer than 5 letters split into two pieces so sub-word
    merging is exercised), "\\n", then padding to ``max_len`` (truncated with the mask all True,
    as openpi does). Ids are stable hashes, not PaliGemma ids.
    """
    pieces = ["<bos>"]
    for word in prompt.strip().replace("_", " ").split():
        if len(word) > 5:
            pieces += [WORD_START + word[:3], word[3:]]
        else:
            pieces.append(WORD_START + word)
    pieces.append("\n")
    pieces = pieces[:max_len]
    valid = [True] * len(pieces) + [False] * (max_len - len(pieces))
    pieces = pieces + ["<pad>"] * (max_len - len(pieces))
    ids = [2 if p == "<bos>" else 0 if p == "<pad>" else 108 if p == "\n"
           else 1000 + sum(map(ord, p)) % 250000 for p in pieces]
    return ids, pieces, valid


def openpi_layout(
    *,
    variant: str,
    prompt: str | TextSegment = "pick up the black bowl and place it on the plate",
    max_token_len: int,
    action_horizon: int,
    cameras: Sequence[str] = PI0_CAMERAS,
    camera_valid: Sequence[bool] = (True, True, False),
    grid: tuple[int, int] = (16, 16),
    patch_size: int = 14,
    transforms: Sequence[FrameTransform] | None = None,
    state_token: bool,
) -> TokenLayout:
    """The openpi Pi0-family layout: cameras × grid patches, text, [state], actions."""
    if len(camera_valid) != len(cameras):
        raise FlowlensError(
            f"camera_valid needs one flag per camera ({len(cameras)}), got {len(camera_valid)}."
        )
    transforms = list(transforms) if transforms is not None else [FrameTransform()] * len(cameras)
    segs: list[Segment] = []
    pos = 0
    size = grid[0] * grid[1]
    for name, ok, tf in zip(cameras, camera_valid, transforms, strict=True):
        segs.append(ImageSegment(kind=TokenKind.IMAGE, name=name, start=pos, stop=pos + size, block=0,
                                 grid=tuple(grid), patch_size=patch_size, valid=bool(ok), transform=tf))
        pos += size
    if isinstance(prompt, TextSegment):
        text = dataclasses.replace(prompt, start=pos, stop=pos + prompt.size, block=0)
    else:
        ids, pieces, valid = synthetic_pieces(prompt, max_token_len)
        text = TextSegment.from_pieces(start=pos, token_ids=ids, pieces=pieces, valid=valid)
    segs.append(text)
    pos = text.stop
    prefix_len = pos
    block = 1
    if state_token:
        segs.append(StateSegment(kind=TokenKind.STATE, name="state", start=pos, stop=pos + 1, block=block))
        pos, block = pos + 1, block + 1
    segs.append(ActionSegment(kind=TokenKind.ACTION, name="actions", start=pos, stop=pos + action_horizon,
                              block=block))
    return TokenLayout(segments=tuple(segs), prefix_len=prefix_len, variant=variant)


def pi0_layout(prompt: str | TextSegment = "pick up the black bowl and place it on the plate", *,
               max_token_len: int = 48, action_horizon: int = 50, **kwargs) -> TokenLayout:
    """The `pi0_libero` layout: 3×256 patches (third camera masked), 48 text tokens, state, 50 actions
    (n = 867, prefix 816)."""
    return openpi_layout(variant="pi0", prompt=prompt, max_token_len=max_token_len,
                         action_horizon=action_horizon, state_token=True, **kwargs)


def pi05_layout(prompt: str | TextSegment = "pick up the black bowl and place it on the plate", *,
                max_token_len: int = 200, action_horizon: int = 10, **kwargs) -> TokenLayout:
    """The `pi05_libero` layout: 3×256 patches (third camera masked), 200 text tokens, no state token,
    10 actions (n = 978, prefix 968)."""
    return openpi_layout(variant="pi05", prompt=prompt, max_token_len=max_token_len,
                         action_horizon=action_horizon, state_token=False, **kwargs)
