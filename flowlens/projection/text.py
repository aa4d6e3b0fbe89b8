"""Text projection: scores on prompt tokens → scores per word, special tokens reported apart.

Sub-word pieces are merged into the words they spell (their scores summed, since scores are
attention *mass*). BOS and the "\\n" answer marker are attention sinks: their mass is reported
separately, never folded into words and never silently renormalised away; padding is reported as
the mass on padding tokens (NaN when those tokens were removed from the graph, as they should be).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from flowlens.core.checks import check_type, real_array
from flowlens.core.layout import TokenLayout
from flowlens.errors import FlowlensError


@dataclasses.dataclass(frozen=True)
class WordScores:
    """Scores of the prompt's words.

    Attributes:
      words: the prompt words in order.
      values: float64 [word]: summed score of each word's pieces.
      pieces: the pieces of each word, e.g. ("▁bl", "ack").
      specials: score of each special role present: "bos", "newline", "eos", "pad" (sum).
    """

    words: tuple[str, ...]
    values: np.ndarray
    pieces: tuple[tuple[str, ...], ...]
    specials: dict

    @property
    def total_words(self) -> float:
        return float(np.nansum(self.values))

    def ranking(self) -> list[tuple[str, float]]:
        """Words sorted by score, highest first."""
        order = np.argsort(-np.nan_to_num(self.values, nan=-np.inf), kind="stable")
        return [(self.words[i], float(self.values[i])) for i in order]

    def rank_of(self, word: str) -> int:
        """0-based rank of ``word`` (its best occurrence) among the words."""
        names = [w for w, _ in self.ranking()]
        lowered = [w.lower() for w in names]
        if word.lower() not in lowered:
            raise FlowlensError(f"word {word!r} is not in the prompt {list(self.words)}.")
        return lowered.index(word.lower())


def word_scores(scores: np.ndarray, layout: TokenLayout) -> WordScores:
    """Merge per-token scores [token] of the text segment into words.

    Args:
      scores: float [token] over the whole layout (NaN at removed tokens).
    """
    check_type("layout", layout, TokenLayout)
    scores = real_array("scores", scores, ndim=1, shape_hint=f"[{layout.n}]").astype(np.float64)
    if scores.shape != (layout.n,):
        raise FlowlensError(f"scores must be [{layout.n}] (one per token of the layout), got {scores.shape}.")
    text = layout.text
    if text is None:
        raise FlowlensError("this layout has no text segment; there are no words to score.")
    tok = scores[text.start:text.stop]
    word_of = np.asarray(text.word_of_token)
    values = np.zeros(len(text.words))
    pieces: list[list[str]] = [[] for _ in text.words]
    for i, w in enumerate(word_of):
        if w >= 0:
            values[w] += tok[i]
            pieces[w].append(text.pieces[i])
    roles = np.asarray(text.roles)
    specials = {}
    for role in ("bos", "newline", "eos", "pad"):
        hit = roles == role
        if hit.any():
            specials[role] = float(tok[hit].sum()) if not np.isnan(tok[hit]).all() else float("nan")
    return WordScores(words=text.words, values=values, pieces=tuple(tuple(p) for p in pieces), specials=specials)
