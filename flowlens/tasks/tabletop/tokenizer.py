"""The tabletop task's SentencePiece tokenizer: PaliGemma's conventions on a 72-piece vocabulary.

Real Pi0 uses PaliGemma's 257,152-piece SentencePiece model, which cannot ship here. The
embedded default instead uses a BPE SentencePiece model trained on every prompt the task can
produce, with PaliGemma's special ids (pad 0, eos 1, bos 2, unk 3), ``"\\n"`` as a piece of its
own (Pi0's answer marker), identity normalisation and no dummy prefix (as Gemma). The vocabulary
is small enough that frequent words are single pieces ("▁the", "▁red", "▁bowl") while others
split into sub-word pieces ("pi" + "ck", "▁pla" + "ce"), as in real models; the flowlens
tokenizer merges them back into words.

It loads with :class:`flowlens.model.tokenizer.PaligemmaTokenizer` like PaliGemma's file.
"""

from __future__ import annotations

from flowlens.model.tokenizer import train_sentencepiece
from flowlens.tasks.tabletop.scene import all_prompts

VOCAB_SIZE = 72


def train_tokenizer(vocab_size: int = VOCAB_SIZE) -> bytes:
    """Train the task tokenizer (deterministic, single thread) and return the model file's bytes."""
    return train_sentencepiece(all_prompts(), vocab_size=vocab_size, model_type="bpe", byte_fallback=False)
