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

import io

import sentencepiece

from flowlens.tasks.tabletop.scene import all_prompts

VOCAB_SIZE = 72


def train_tokenizer(vocab_size: int = VOCAB_SIZE) -> bytes:
    """Train the task tokenizer (deterministic, single thread) and return the model file's bytes."""
    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(all_prompts()),
        model_writer=out,
        vocab_size=vocab_size,
        model_type="bpe",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        user_defined_symbols=["\n"],
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        num_threads=1,
        character_coverage=1.0,
        byte_fallback=False,
        minloglevel=2,
    )
    return out.getvalue()
