"""The shipped embedded default (builtin:tabletop): loads, fits its config, and solves held-out scenes.

The held-out test runs the real sampler on scenes whose seeds were never trained on and checks
that the predicted chunks head for the object the prompt names far more often than chance, and
that re-writing the prompt to name another object of the same scene turns the chunk towards
that object (the policy reads the prompt, not just the image).

Numbers of the shipped model: ``benchmarks/train_tabletop.md`` (0.95 vs chance 0.27 on 100
held-out scenes; prompt swap 0.92 vs 0.30).
"""

import json

import numpy as np
import pytest

from flowlens.errors import FlowlensError
from flowlens.tasks.tabletop.builtin import (
    BUILTIN_NAMES,
    builtin_dir,
    is_builtin,
    load_builtin,
    load_builtin_checkpoint,
    load_builtin_norm_stats,
    parse_builtin,
    training_info,
)
from flowlens.tasks.tabletop.config import tabletop_config

NUM_SCENES = 40


def test_assets_are_small_and_complete():
    d = builtin_dir("tabletop")
    sizes = {p.name: p.stat().st_size for p in d.iterdir() if p.is_file()}
    assert {"tokenizer.model", "params.npz", "config.json", "norm_stats.json"} <= set(sizes)
    assert sum(sizes.values()) <= 20 * 2**20, sizes
    info = training_info()
    assert info.get("steps", 0) > 0


def test_builtin_names():
    assert parse_builtin("builtin:tabletop") == "tabletop" == parse_builtin("tabletop")
    assert is_builtin("builtin:tabletop") and not is_builtin("tabletop")
    assert BUILTIN_NAMES == ("tabletop",)
    with pytest.raises(FlowlensError, match="Did you mean"):
        parse_builtin("builtin:tabletopp")


def test_load_builtin_matches_the_code_config():
    config, params, tok = load_builtin("builtin:tabletop")
    assert config == tabletop_config()
    assert config.num_layers == 18 and config.num_heads == 8 and config.paligemma.num_kv_heads == 1
    assert tok.vocab_size == config.vocab_size and tok.max_len == config.max_token_len
    stats = load_builtin_norm_stats()
    assert stats["state"].mean.shape == (4,) and stats["actions"].std.shape == (4,)
    ckpt = load_builtin_checkpoint()
    assert ckpt.config == config and ckpt.norm_stats is not None
    json.loads((builtin_dir() / "config.json").read_text())


@pytest.fixture(scope="module")
def held_out_results():
    from flowlens.model.pi0 import Pi0Model
    from flowlens.model.sampler import sample_actions
    from flowlens.tasks.tabletop.evaluate import evaluate_policy, held_out_cases

    config, params, tok = load_builtin("tabletop")
    stats = load_builtin_norm_stats("tabletop")
    cases = held_out_cases(NUM_SCENES)
    return evaluate_policy(Pi0Model(config), params, tok, stats, cases, batch_size=NUM_SCENES)


@pytest.mark.slow
def test_builtin_model_heads_for_the_named_object(held_out_results):
    r = held_out_results
    print("held-out:", json.dumps(r))
    assert r["frames"] == NUM_SCENES
    # far better than chance (chance ~ 0.3 with 3 or 4 objects)
    assert r["accuracy"] >= r["chance"] + 0.3, r
    assert r["mean_cosine"] > 0.5, r


@pytest.mark.slow
def test_builtin_model_follows_the_prompt(held_out_results):
    r = held_out_results
    assert r["swap_frames"] >= NUM_SCENES // 2
    # naming another object turns the chunk towards it
    assert r["swap_accuracy"] >= r["swap_chance"] + 0.3, r
    assert r["swap_stays"] < 0.5 * r["accuracy"], r


@pytest.mark.slow
def test_builtin_capture_has_the_tabletop_layout():
    from flowlens.model.capture_config import CaptureConfig
    from flowlens.model.pi0 import Pi0Model
    from flowlens.model.sampler import sample_actions
    from flowlens.tasks.tabletop.evaluate import held_out_cases
    from flowlens.tasks.tabletop.policy import observe

    config, params, tok = load_builtin("tabletop")
    stats = load_builtin_norm_stats("tabletop")
    case = held_out_cases(1, render_frames=True)[0]
    frames = {c: case.episode.frames[c][case.t] for c in config.cameras}
    obs = observe(frames, case.scene.prompt, case.episode.states[case.t], tok, config, stats)
    actions, cap = sample_actions(Pi0Model(config), 
        params, obs, rng=__import__("jax").random.key(0), capture=CaptureConfig(layers=(17,), heads="mean")
    )
    assert actions.shape == (1, 10, config.action_dim)
    lay = cap.layout
    assert [c.name for c in lay.cameras] == ["base_0_rgb", "left_wrist_0_rgb"]
    base = lay.cameras[0]
    assert base.grid == (4, 4) and base.transform.frame_size == (144, 192)
    assert base.transform.model_size == (56, 56)
    assert lay.prefix_len == 2 * 16 + 20 and lay.n == lay.prefix_len + 10  # Pi0.5: no state token
    assert lay.state is None
    assert case.scene.source_object.color in lay.text.words
    assert np.isfinite(cap.steps[-1].probs).all()


@pytest.mark.slow
def test_builtin_model_grounds_the_prompt_in_the_image_tokens():
    """Causal: with the image patches unable to read the prompt (knockout cameras → words in every
    layer), the policy no longer finds the named object; cutting the action tokens off the prompt
    words does not matter (the named object reaches them through the image tokens)."""
    from flowlens.model.knockout import Knockout
    from flowlens.model.pi0 import Pi0Model
    from flowlens.model.sampler import sample_actions
    from flowlens.tasks.tabletop.evaluate import evaluate_policy, held_out_cases

    config, params, tok = load_builtin("tabletop")
    stats = load_builtin_norm_stats("tabletop")
    model = Pi0Model(config)
    cases = held_out_cases(20)
    cams = ["base_0_rgb", "left_wrist_0_rgb"]

    def evaluate(knockouts):
        return evaluate_policy(model, params, tok, stats, cases, knockouts=knockouts, swap=False)

    base = evaluate([])
    chance, intact = base["chance"], base["accuracy"]
    no_prompt_for_patches = evaluate([Knockout(query=cams, key="words")])["accuracy"]
    no_prompt_for_actions = evaluate([Knockout(query="actions", key="words")])["accuracy"]
    print(
        f"chance {chance:.2f} intact {intact:.2f} patches-x-words {no_prompt_for_patches:.2f} "
        f"actions-x-words {no_prompt_for_actions:.2f}"
    )
    assert intact >= chance + 0.4
    assert no_prompt_for_patches <= chance + 0.2
    assert no_prompt_for_actions >= chance + 0.4


def test_builtin_model_does_not_read_the_state_and_refuses_a_non_finite_one():
    # As documented (config.py): the state is neither a token nor in the prompt, so the chunks for
    # state 0 and 5 are identical; a NaN state is still refused by name rather than ignored.
    import jax

    from flowlens.model import sample_actions
    from flowlens.model.pi0 import Pi0Model
    from flowlens.tasks.tabletop.evaluate import held_out_cases
    from flowlens.tasks.tabletop.policy import observe

    config, params, tok = load_builtin("tabletop")
    stats = load_builtin_norm_stats("tabletop")
    case = held_out_cases(1, render_frames=True)[0]
    frames = {c: case.episode.frames[c][case.t] for c in config.cameras}
    model = Pi0Model(config)
    chunks = []
    for v in (0.0, 5.0):
        obs = observe(frames, case.scene.prompt, np.full(4, v, np.float32), tok, config, stats)
        chunks.append(np.asarray(sample_actions(model, params, obs, rng=jax.random.key(0))[0]))
    assert chunks[0].tobytes() == chunks[1].tobytes()
    with pytest.raises(FlowlensError, match=r"state must be finite; entry 0 is nan"):
        observe(frames, case.scene.prompt, np.full(4, np.nan, np.float32), tok, config, stats)
