"""Segments: the typed runs of tokens a TokenLayout is made of.

A segment is a contiguous run ``[start, stop)`` of one kind of token: the image patches of one
named camera (with its grid, patch size, validity and the ``FrameTransform`` from the stored frame
to the model input), the prompt tokens (ids, SentencePiece pieces, the word each belongs to, and
special roles: BOS, the "\\n" answer marker, padding), the robot-state token, or the action chunk.
Segments carry their attention block of openpi's block-causal mask; ``TokenLayout``
(:mod:`flowlens.core.layout`) orders them and answers questions about the whole sequence.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

from flowlens.core.frame import FrameTransform
from flowlens.errors import FlowlensError

__all__ = ["SPECIAL_ROLES", "WORD_START", "ActionSegment", "ImageSegment", "Segment", "StateSegment",
           "TextSegment", "TokenKind"]

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

