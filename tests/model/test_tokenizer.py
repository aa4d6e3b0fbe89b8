"""PaliGemma tokenizer wrapper, with a tiny SentencePiece model trained here (no network)."""

import random

import numpy as np
import pytest
import sentencepiece as spm

from flowlens.core.openpi_layout import pi0_layout
from flowlens.errors import FlowlensError
from flowlens.model.tokenizer import (
    PaligemmaTokenizer,
    TruncationWarning,
    clean_prompt,
    default_tokenizer_path,
    discretize_state,
    train_sentencepiece,
)

OBJECTS = [
    "black bowl",
    "plate",
    "red mug",
    "wooden cabinet",
    "alphabet soup",
    "cream cheese",
    "ketchup",
    "tomato sauce",
    "butter",
    "milk",
    "orange juice",
    "chocolate pudding",
    "basket",
    "stove",
    "top drawer",
    "microwave",
    "wine bottle",
    "rack",
    "yellow and white mug",
    "frying pan",
]
TEMPLATES = [
    "pick up the {a} and place it on the {b}",
    "put the {a} in the {b}",
    "open the {b}",
    "turn on the {b}",
    "push the {a} to the front of the {b}",
    "put both the {a} and the {b} in the basket",
    "Pick Up The {a}",
]


def train_tiny_sentencepiece(path, vocab_size=90):
    """A PaliGemma-like SentencePiece model (pad 0, eos 1, bos 2, "\\n" a piece, no dummy prefix,
    digits split) trained on a few hundred tabletop prompts; writes ``path`` and returns it."""
    rnd = random.Random(0)
    sentences = [
        rnd.choice(TEMPLATES).format(a=rnd.choice(OBJECTS), b=rnd.choice(OBJECTS)) for _ in range(400)
    ]
    sentences += [f"Pick Up The {o.title()}" for o in OBJECTS]
    sentences += [
        f"Task: {s}, State: {' '.join(str(rnd.randint(0, 255)) for _ in range(8))};\nAction: "
        for s in sentences[:100]
    ]
    model = train_sentencepiece(sentences, vocab_size=vocab_size, model_type="unigram",
                                remove_extra_whitespaces=False, split_digits=True, hard_vocab_limit=False)
    path.write_bytes(model)
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return train_tiny_sentencepiece(tmp_path_factory.mktemp("sp") / "tiny_paligemma.model")


@pytest.fixture(scope="module")
def tok(model_file):
    return PaligemmaTokenizer(model_file, max_len=48)


@pytest.fixture(scope="module")
def sp(model_file):
    return spm.SentencePieceProcessor(model_file=str(model_file))


PROMPTS = [
    "pick up the black bowl and place it on the plate",
    "open the top drawer",
    "put both the alphabet soup and the tomato sauce in the basket",
    "Pick Up The Ketchup",
]


def test_clean_prompt_keeps_case():
    assert clean_prompt("  Pick_up the\nBlack bowl  ") == "Pick up the Black bowl"


@pytest.mark.parametrize("prompt", PROMPTS)
def test_pi0_format_ids_mask_and_roles(tok, sp, prompt):
    out = tok.tokenize(prompt)
    want = [2] + sp.encode(prompt) + sp.encode("\n")
    n = len(want)
    assert out.ids.dtype == np.int32 and out.ids.shape == (48,)
    assert out.mask.dtype == bool and out.mask.shape == (48,)
    assert out.ids[:n].tolist() == want and out.ids[n:].tolist() == [0] * (48 - n)
    assert out.mask.tolist() == [True] * n + [False] * (48 - n)
    seg = out.text
    assert seg.size == 48 and seg.start == 0
    assert seg.roles[0] == "bos" and seg.pieces[0] == "<bos>"
    assert seg.roles[n - 1] == "newline" and seg.pieces[n - 1] == "\n"
    assert set(seg.roles[n:]) == {"pad"} and set(seg.roles[1 : n - 1]) == {""}
    assert out.num_tokens == n and not out.truncated


@pytest.mark.parametrize("prompt", PROMPTS)
def test_words_merge_pieces(tok, prompt):
    seg = tok.tokenize(prompt).text
    assert list(seg.words) == prompt.split()
    word_of = np.asarray(seg.word_of_token)
    roles = np.asarray(seg.roles)
    assert (word_of[roles == ""] >= 0).all() and (word_of[roles != ""] == -1).all()
    for w, word in enumerate(seg.words):  # each word is exactly the concatenation of its pieces
        pieces = [seg.pieces[t] for t in np.flatnonzero(word_of == w)]
        assert "".join(pieces).replace("▁", "") == word


@pytest.mark.parametrize("state", [None, np.linspace(-1, 1, 8)])
def test_words_are_the_prompts_own_even_where_the_vocabulary_has_no_piece(tok, sp, state):
    """Characters the vocabulary lacks are <unk> pieces; the words still read as the user wrote them."""
    prompt = "Zip the Quartz jewel box"  # Z, Q, j, x, z: not in the tiny vocabulary
    out = tok.tokenize(prompt, state, max_len=96)
    assert sp.unk_id() in out.ids.tolist() and "<unk>" in out.text.pieces  # pieces stay the vocabulary's
    words = list(out.text.words)
    if state is None:
        assert words == prompt.split()
    else:
        assert words[:6] == ["Task:", "Zip", "the", "Quartz", "jewel", "box,"]
    assert not any("<unk>" in w for w in words)
    assert out.ids.tolist()[: out.num_tokens] == tok.format_ids(prompt, state)


def test_tiny_model_really_splits_words(tok):
    """The merging tests are only meaningful if words span several pieces and lone "▁" marks occur."""
    seg = tok.tokenize(PROMPTS[0]).text
    counts = np.bincount([w for w in seg.word_of_token if w >= 0])
    assert counts.max() > 1
    assert "▁" in seg.pieces


def test_cleaning_applied_before_tokenising(tok):
    a, b = tok.tokenize("  pick_up the\nblack bowl "), tok.tokenize("pick up the black bowl")
    np.testing.assert_array_equal(a.ids, b.ids)
    assert a.prompt == "pick up the black bowl"


def test_discretize_state_matches_openpi_bins():
    s = np.array([-1.5, -1.0, -0.99, 0.0, 0.5, 0.999, 1.0, 2.0])
    assert discretize_state(s).tolist() == [-1, 0, 1, 128, 192, 255, 255, 255]


def test_pi05_discrete_state_format(tok, sp):
    state = np.array([0.0, -1.0, 0.999])
    out = tok.tokenize("open the microwave", state, max_len=64)
    want = [2] + sp.encode("Task: open the microwave, State: 128 0 255;\nAction: ")
    n = len(want)
    assert out.ids[:n].tolist() == want and out.mask.sum() == n
    seg = out.text
    assert "newline" in seg.roles and seg.roles.count("newline") == 1
    assert "" not in seg.words
    assert {"open", "the", "128", "0"} <= set(seg.words)
    assert seg.words[0] == "Task:" and seg.words[-1] == "Action:"


def test_padding_to_max_len_and_override(tok):
    out = tok.tokenize("open the stove", max_len=20)
    assert out.ids.shape == (20,) and out.mask.sum() == out.num_tokens < 20
    assert (out.ids[~out.mask] == 0).all()


def test_truncation_warns_and_keeps_mask_true(tok):
    prompt = PROMPTS[2]
    with pytest.warns(TruncationWarning, match="truncating to 6"):
        out = tok.tokenize(prompt, max_len=6)
    assert out.truncated and out.num_tokens > 6
    assert out.mask.tolist() == [True] * 6 and out.ids.shape == (6,)
    assert out.text.roles[0] == "bos" and "newline" not in out.text.roles


def test_layout_from_tokenizer_text(tok):
    layout = pi0_layout(tok.tokenize(PROMPTS[0]).text)
    idx = layout.select(words="bowl")
    assert idx.size >= 1 and (idx >= 768).all()
    assert "".join(layout.token_labels()[i] for i in idx) == "bowl"
    assert layout.groups()["bos"].tolist() == [768]


def test_missing_model_file_names_paligemma_tokenizer(tmp_path, monkeypatch):
    with pytest.raises(
        FlowlensError, match=r"paligemma_tokenizer\.model.*gs://big_vision/paligemma_tokenizer\.model"
    ):
        PaligemmaTokenizer(tmp_path / "nope.model")
    monkeypatch.delenv("FLOWLENS_TOKENIZER", raising=False)
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path))
    with pytest.raises(FlowlensError, match="no model_path was given"):
        PaligemmaTokenizer()


def test_not_a_sentencepiece_file(tmp_path):
    bad = tmp_path / "paligemma_tokenizer.model"
    bad.write_bytes(b"definitely not a protobuf" * 10)
    with pytest.raises(FlowlensError, match="is not a SentencePiece model"):
        PaligemmaTokenizer(bad)


def test_default_path_from_env_and_openpi_cache(model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWLENS_TOKENIZER", str(model_file))
    assert default_tokenizer_path() == model_file
    assert PaligemmaTokenizer(max_len=20).tokenize("open the stove").ids.shape == (20,)
    monkeypatch.delenv("FLOWLENS_TOKENIZER")
    cache = tmp_path / "big_vision" / "paligemma_tokenizer.model"
    cache.parent.mkdir()
    cache.write_bytes(model_file.read_bytes())
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path))
    assert default_tokenizer_path() == cache
