"""The PaliGemma SentencePiece tokenizer, with openpi's Pi0 / Pi0.5 prompt formats.

openpi tokenises a prompt as follows (``models/tokenizer.py``, fact sheet §5):

* cleaning: ``strip()``, ``"_"`` → space, ``"\\n"`` → space; no lowercasing;
* Pi0 format (and ``pi05_libero``, whose state is not in the prompt): ``BOS + pieces(text) +
  pieces("\\n")``; the newline is the "start of answer" token;
* Pi0.5 discrete-state format: ``"Task: {text}, State: {s0 s1 ...};\\nAction: "`` encoded with BOS
  in one call, where ``s_i = digitize(state_i, linspace(-1, 1, 257)[:-1]) - 1`` (0..255 for a
  normalised state in [-1, 1]);
* right-padding with id 0 up to ``max_len`` (mask False there); longer prompts are truncated to
  ``max_len`` with a warning (mask all True, the "\\n" may be lost).

Besides ids and mask, :meth:`PaligemmaTokenizer.tokenize` returns the prompt as a
:class:`~flowlens.core.segments.TextSegment` (real SentencePiece pieces merged into words, BOS /
newline / padding marked), so a TokenLayout names words, not ids.

The model file is PaliGemma's ``paligemma_tokenizer.model`` (vocab 257,152; pad 0, eos 1, bos 2)
from big_vision's public bucket ``gs://big_vision/paligemma_tokenizer.model``; flowlens never
downloads it. Loading a SentencePiece model parses a protobuf; no code is executed.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import warnings
from collections.abc import Sequence

import numpy as np
import sentencepiece

from flowlens.core.segments import TextSegment
from flowlens.errors import FlowlensError, short_text

TOKENIZER_FILE = "paligemma_tokenizer.model"
TOKENIZER_URL = "gs://big_vision/paligemma_tokenizer.model"
TOKENIZER_HTTPS = "https://storage.googleapis.com/big_vision/paligemma_tokenizer.model"
# Environment variable naming the tokenizer file when no path is passed.
TOKENIZER_ENV = "FLOWLENS_TOKENIZER"
WORD_MARK = "\u2581"  # SentencePiece's word-start mark
PAD_ID = 0  # openpi pads with 0 (``False``), whatever the model's pad id.


class TruncationWarning(UserWarning):
    """A prompt had more tokens than ``max_len`` and was cut (as openpi does)."""


@dataclasses.dataclass(frozen=True, eq=False)
class TokenizedPrompt:
    """One tokenised prompt.

    Attributes:
      ids: int32 [max_len] token ids, right-padded with 0.
      mask: bool [max_len], True on real tokens.
      text: the same tokens as a TextSegment (start 0; pieces, words, roles).
      prompt: the cleaned prompt text (before formatting).
      num_tokens: tokens before padding / truncation.
    """

    ids: np.ndarray
    mask: np.ndarray
    text: TextSegment
    prompt: str
    num_tokens: int

    @property
    def truncated(self) -> bool:
        return self.num_tokens > self.ids.shape[0]


def clean_prompt(prompt: str) -> str:
    """openpi's cleaning: strip, ``_`` → space, newline → space (case kept)."""
    return prompt.strip().replace("_", " ").replace("\n", " ")


def discretize_state(state: np.ndarray) -> np.ndarray:
    """Pi0.5's 256-bin state discretisation: int [d], 0..255 for values in [-1, 1].

    ``digitize(state, linspace(-1, 1, 257)[:-1]) - 1``; values below -1 give -1 and values
    above 1 give 255, exactly as openpi.
    """
    state = np.asarray(state, dtype=np.float64).reshape(-1)
    return np.digitize(state, bins=np.linspace(-1, 1, 256 + 1)[:-1]) - 1


def default_tokenizer_path() -> pathlib.Path | None:
    """The tokenizer file from ``$FLOWLENS_TOKENIZER`` or openpi's download cache, if present.

    openpi caches it at ``$OPENPI_DATA_HOME/big_vision/paligemma_tokenizer.model``
    (default ``~/.cache/openpi``).
    """
    candidates = []
    if os.environ.get(TOKENIZER_ENV):
        candidates.append(pathlib.Path(os.environ[TOKENIZER_ENV]).expanduser())
    openpi_home = pathlib.Path(os.environ.get("OPENPI_DATA_HOME", "~/.cache/openpi")).expanduser()
    candidates.append(openpi_home / "big_vision" / TOKENIZER_FILE)
    return next((c for c in candidates if c.is_file()), None)


def _missing_message(path: str | os.PathLike | None) -> str:
    where = (
        f"model_path={str(path)!r} does not exist"
        if path is not None
        else (f"no model_path was given, ${TOKENIZER_ENV} is not set and openpi's cache has no copy")
    )
    return (
        f"PaligemmaTokenizer needs PaliGemma's SentencePiece file {TOKENIZER_FILE!r}, but {where}. "
        f"It is public in big_vision's bucket: {TOKENIZER_URL} (e.g. `gsutil cp {TOKENIZER_URL} .` or "
        f"download {TOKENIZER_HTTPS}). Pass its path: PaligemmaTokenizer('path/to/{TOKENIZER_FILE}'), "
        f"or set {TOKENIZER_ENV}=path/to/{TOKENIZER_FILE}."
    )


PALIGEMMA_SPECIALS = {
    "pad_id": 0, "eos_id": 1, "bos_id": 2, "unk_id": 3,
    "pad_piece": "<pad>", "eos_piece": "<eos>", "bos_piece": "<bos>", "unk_piece": "<unk>",
    "user_defined_symbols": ["\n"], "normalization_rule_name": "identity", "add_dummy_prefix": False,
    "character_coverage": 1.0, "minloglevel": 2, "num_threads": 1,
}


def train_sentencepiece(sentences: Sequence[str], *, vocab_size: int, **options) -> bytes:
    """Train a small SentencePiece model with PaliGemma's token layout and return the model file.

    PaliGemma's conventions are the defaults (pad 0, eos 1, bos 2, unk 3, "\n" as its own piece,
    no normalisation, no dummy prefix; single-threaded, so deterministic); ``options`` override or
    add SentencePiece trainer settings (``model_type="bpe"``, ``split_digits=True``, ...). For task
    tokenizers and tests; real checkpoints use the released ``paligemma_tokenizer.model``.
    """
    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=out, vocab_size=vocab_size,
        **{**PALIGEMMA_SPECIALS, **options},
    )
    return out.getvalue()


class PaligemmaTokenizer:
    """SentencePiece tokenizer with openpi's prompt formats.

    Args:
      model_path: the ``paligemma_tokenizer.model`` file; None looks at ``$FLOWLENS_TOKENIZER``
        and openpi's cache (:func:`default_tokenizer_path`).
      max_len: padded length (``Pi0Config.max_token_len``: 48 for Pi0, 200 for Pi0.5).

    Raises:
      FlowlensError: the file is missing or is not a SentencePiece model.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, *, max_len: int = 48):
        path = pathlib.Path(model_path).expanduser() if model_path is not None else default_tokenizer_path()
        if path is None or not path.is_file():
            raise FlowlensError(_missing_message(model_path))
        self._init(path.read_bytes(), max_len, source=str(path))

    @classmethod
    def from_bytes(cls, model_proto: bytes, *, max_len: int = 48) -> PaligemmaTokenizer:
        """A tokenizer from the bytes of a SentencePiece model file."""
        self = cls.__new__(cls)
        self._init(model_proto, max_len, source="<bytes>")
        return self

    def _init(self, proto: bytes, max_len: int, source: str) -> None:
        if not isinstance(max_len, int) or max_len <= 0:
            raise FlowlensError(f"max_len must be a positive int, got {max_len!r}.")
        self.max_len = max_len
        self.source = source
        sp = sentencepiece.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(proto)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError on a bad proto
            raise FlowlensError(
                f"{source} is not a SentencePiece model ({type(e).__name__}: {e}). "
                + _missing_message(None).split(", but ")[0]
                + "."
            ) from None
        self._sp = sp

    def __repr__(self) -> str:
        return f"PaligemmaTokenizer({self.source!r}, vocab={self.vocab_size}, max_len={self.max_len})"

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    @property
    def bos_id(self) -> int:
        return int(self._sp.bos_id())

    @property
    def eos_id(self) -> int:
        return int(self._sp.eos_id())

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Raw SentencePiece ids of ``text`` (no cleaning, no padding)."""
        return list(self._sp.encode(text, add_bos=add_bos))

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """The SentencePiece piece of each id ("<bos>", "▁pick", "\\n", ...)."""
        return [self._sp.id_to_piece(int(i)) for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def format_ids(self, prompt: str, state: np.ndarray | None = None) -> list[int]:
        """Unpadded ids in openpi's format: Pi0 when ``state`` is None, else Pi0.5 discrete-state."""
        return [i for i, _ in self._format(prompt, state)]

    def _format(self, prompt: str, state: np.ndarray | None) -> list[tuple[int, str]]:
        """(id, surface piece) per token of ``format_ids``: the piece as the text spells it, so an
        unknown character reads as itself ("P"), not "<unk>" (SentencePiece's byte offsets)."""
        text = clean_prompt(prompt)
        if state is None:
            return self._surface_pieces(text, add_bos=True) + self._surface_pieces("\n")
        state_str = " ".join(str(int(s)) for s in discretize_state(state))
        return self._surface_pieces(f"Task: {text}, State: {state_str};\nAction: ", add_bos=True)

    def _surface_pieces(self, text: str, *, add_bos: bool = False) -> list[tuple[int, str]]:
        proto = self._sp.encode(text, return_type="proto")  # the proto API has no add_bos
        out = [(int(self._sp.bos_id()), self._sp.id_to_piece(self._sp.bos_id()))] if add_bos else []
        for p in proto.pieces:
            piece = self._sp.id_to_piece(p.id)
            if p.id == self._sp.unk_id() and p.surface:  # the text's own characters, word mark kept
                piece = p.surface.replace(" ", WORD_MARK)
            out.append((int(p.id), piece))
        return out

    def tokenize(
        self, prompt: str, state: np.ndarray | None = None, *, max_len: int | None = None
    ) -> TokenizedPrompt:
        """Tokenise one prompt the way openpi's ``PaligemmaTokenizer.tokenize`` does.

        Args:
          prompt: the task instruction.
          state: float [d] normalised state for Pi0.5's discrete-state prompt; None for the Pi0
            format (also Pi0.5 LIBERO, which keeps the state out of the prompt).
          max_len: padded length; default the tokenizer's ``max_len``.

        Returns:
          TokenizedPrompt with ids int32 [max_len], mask bool [max_len] and a TextSegment.

        Warns:
          TruncationWarning: the prompt needed more than ``max_len`` tokens.
        """
        if not isinstance(prompt, str):
            raise FlowlensError(f"prompt must be a str, got {type(prompt).__name__}: {prompt!r}.")
        max_len = self.max_len if max_len is None else max_len
        formatted = self._format(prompt, state)
        ids = [i for i, _ in formatted]
        n = len(ids)
        if n > max_len:
            warnings.warn(
                f"prompt needs {n} tokens but max_len={max_len}; truncating to {max_len} (openpi does the "
                f"same, and the final '\\n' answer marker is lost). Raise max_token_len in the config "
                f"if this happens often. Prompt: {short_text(prompt)}",
                TruncationWarning,
                stacklevel=2,
            )
        ids = ids[:max_len]
        valid = [True] * len(ids) + [False] * (max_len - len(ids))
        pad = [self._sp.id_to_piece(PAD_ID)] * (max_len - len(ids))
        pieces = self.pieces(ids) + pad
        surfaces = [s for _, s in formatted[: len(ids)]] + pad
        ids = ids + [PAD_ID] * (max_len - len(ids))
        # words are read from the surface pieces (the user's characters), pieces kept as the vocabulary has them
        text = _merge_lone_word_marks(
            TextSegment.from_pieces(start=0, token_ids=ids, pieces=surfaces, valid=valid)
        )
        text = dataclasses.replace(text, pieces=tuple(pieces))
        return TokenizedPrompt(
            ids=np.asarray(ids, dtype=np.int32),
            mask=np.asarray(valid, dtype=bool),
            text=text,
            prompt=clean_prompt(prompt),
            num_tokens=n,
        )


def _merge_lone_word_marks(seg: TextSegment) -> TextSegment:
    """Attach lone "▁" pieces to the word they start.

    SentencePiece often emits the word-start mark as its own piece ("▁" + "1" + "2" for " 12").
    ``TextSegment.from_pieces`` then yields an empty word; this gives such a piece to the word of
    the following token (or, when that is special, e.g. at the end of the prompt, to the word of
    the preceding token) and drops the empty words.
    """
    if "" not in seg.words:
        return seg
    keep = [i for i, w in enumerate(seg.words) if w]
    new_index = {old: new for new, old in enumerate(keep)}
    old = list(seg.word_of_token)
    word_of = [new_index.get(w, -1) for w in old]
    for t, w in enumerate(old):
        if w >= 0 and not seg.words[w]:
            after = word_of[t + 1] if t + 1 < len(old) else -1
            before = word_of[t - 1] if t > 0 else -1
            word_of[t] = after if after >= 0 else before
    return dataclasses.replace(seg, word_of_token=tuple(word_of), words=tuple(seg.words[i] for i in keep))


__all__ = [
    "PaligemmaTokenizer",
    "TokenizedPrompt",
    "TruncationWarning",
    "clean_prompt",
    "discretize_state",
    "default_tokenizer_path",
]
