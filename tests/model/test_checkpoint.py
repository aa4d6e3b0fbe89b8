"""openpi checkpoints: on-disk round trips, architecture inference, validation errors, norm stats."""

import json
import pathlib

import jax
import ml_dtypes
import numpy as np
import pytest
from flax import traverse_util

from flowlens.errors import FlowlensError
from flowlens.model.checkpoint import (
    check_params,
    expected_param_shapes,
    flatten_params,
    infer_config,
    load_checkpoint,
    load_params,
    model_param_shapes,
    param_count,
    resolve_params_dir,
    save_openpi_checkpoint,
)
from flowlens.model.config import GemmaConfig, Pi0Config, SiglipConfig, get_config
from flowlens.model.norm_stats import NormStats, load_norm_stats, normalize, save_norm_stats, unnormalize

# test_tiny with a 1000-row embedding instead of 257,152 (keeps files and random draws small).
TINY = get_config("test_tiny").replace(vocab_size=1000)
TINY05 = get_config("test_tiny_pi05").replace(vocab_size=1000)


def random_params(config: Pi0Config, seed: int = 0) -> dict:
    """A float32 tree with openpi's paths and ``config``'s shapes (numpy only: no JAX init)."""
    rng = np.random.default_rng(seed)
    flat = {
        tuple(k.split("/")): rng.standard_normal(s).astype(np.float32)
        for k, s in expected_param_shapes(config).items()
    }
    return traverse_util.unflatten_dict(flat)


def assert_trees_equal(got, want):
    g, w = flatten_params(got), flatten_params(want)
    assert sorted(g) == sorted(w)
    for k in w:
        assert g[k].dtype == w[k].dtype, k
        np.testing.assert_array_equal(g[k], w[k], err_msg=k)


def with_value_keys(params):
    """The tree an openpi training run saves from an nnx.State: every path ends with "value"."""
    return traverse_util.unflatten_dict(
        {k + ("value",): v for k, v in traverse_util.flatten_dict(params).items()}
    )


# A custom architecture that is not in the registry (exercises the pure inference path).
CUSTOM = Pi0Config(
    paligemma=GemmaConfig(width=48, depth=3, mlp_dim=80, num_heads=4, num_kv_heads=2, head_dim=8),
    action_expert=GemmaConfig(width=24, depth=3, mlp_dim=40, num_heads=4, num_kv_heads=2, head_dim=8),
    siglip=SiglipConfig(width=16, depth=2, mlp_dim=24, num_heads=2, patch_size=4, image_size=12, out_dim=48),
    action_dim=7,
    vocab_size=300,
    name="custom",
)


# ---- expected shapes ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "leaves", "count"),
    [("pi0", 50, 3_238_048_528), ("pi05", 51, 3_353_433_872), ("dummy", 50, 429_337_808)],
)
def test_expected_shapes_match_fact_sheet_counts(name, leaves, count):
    shapes = expected_param_shapes(get_config(name))
    assert len(shapes) == leaves
    assert sum(int(np.prod(s)) for s in shapes.values()) == count


@pytest.mark.parametrize("name", ["test_tiny", "test_tiny_pi05", "pi0", "pi05"])
def test_shape_table_equals_model_eval_shape(name):
    assert expected_param_shapes(get_config(name)) == model_param_shapes(get_config(name))


def test_fact_sheet_pi05_adarms_shapes():
    s = expected_param_shapes(get_config("pi05"))
    assert s["PaliGemma/llm/layers/pre_attention_norm_1/Dense_0/kernel"] == (18, 1024, 3072)
    assert s["PaliGemma/llm/final_norm_1/Dense_0/bias"] == (3072,)
    assert "state_proj/kernel" not in s and s["time_mlp_in/kernel"] == (1024, 1024)
    assert s["PaliGemma/llm/layers/attn/kv_einsum_1/w"] == (18, 2, 1, 1024, 256)


# ---- round trips -------------------------------------------------------------------------------
def test_round_trip_float32_and_layout_on_disk(tmp_path):
    params = random_params(TINY)
    root = save_openpi_checkpoint(params, tmp_path / "ckpt")
    assert (root / "params").is_dir() and any(
        (root / "params" / m).exists() for m in ("_METADATA", "manifest.ocdbt")
    )
    assert_trees_equal(load_params(root, dtype=None), params)
    assert_trees_equal(load_params(root / "params", dtype="float32"), params)


def test_training_tree_with_value_keys_round_trips(tmp_path):
    params = random_params(TINY05, seed=3)
    save_openpi_checkpoint(with_value_keys(params), tmp_path)
    assert_trees_equal(load_params(tmp_path, dtype=None), params)
    ckpt = load_checkpoint(tmp_path, "test_tiny_pi05", dtype="float32")
    assert ckpt.config == TINY05
    assert_trees_equal(ckpt.params, params)


def test_bfloat16_on_read_is_default(tmp_path):
    params = random_params(TINY)
    save_openpi_checkpoint(params, tmp_path)
    loaded = flatten_params(load_params(tmp_path))
    key = "PaliGemma/img/head/kernel"
    assert loaded[key].dtype == ml_dtypes.bfloat16
    want = flatten_params(params)[key].astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(loaded[key], want)


def test_run_directory_resolves_to_latest_step(tmp_path):
    for step, seed in ((1000, 1), (2000, 2)):
        save_openpi_checkpoint(random_params(TINY, seed), tmp_path / str(step))
    assert resolve_params_dir(tmp_path) == tmp_path / "2000" / "params"
    assert_trees_equal(load_params(tmp_path, dtype=None), random_params(TINY, 2))


def test_save_refuses_to_overwrite(tmp_path):
    params = random_params(TINY)
    save_openpi_checkpoint(params, tmp_path)
    with pytest.raises(FlowlensError, match="already exists.*overwrite=True"):
        save_openpi_checkpoint(params, tmp_path)
    other = random_params(TINY, seed=9)
    save_openpi_checkpoint(other, tmp_path, overwrite=True)
    assert_trees_equal(load_params(tmp_path, dtype=None), other)


# ---- architecture inference --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["test_tiny", "test_tiny_pi05", "test_small", "test_small_pi05"])
def test_inference_recovers_registry_configs(name):
    cfg = get_config(name)
    shapes = {
        tuple(k.split("/")): jax.ShapeDtypeStruct(s, np.float32)
        for k, s in expected_param_shapes(cfg).items()
    }
    assert infer_config(traverse_util.unflatten_dict(shapes)) == cfg


@pytest.mark.parametrize(("name", "horizon", "tokens"), [("pi0", 50, 48), ("pi05", 50, 200)])
def test_inference_on_full_size_shapes_uses_openpi_defaults(name, horizon, tokens):
    from flowlens.model.pi0 import Pi0Model

    cfg = infer_config(Pi0Model(name).param_shapes())  # ShapeDtypeStructs: nothing allocated
    assert cfg == get_config(name)
    assert (cfg.action_horizon, cfg.max_token_len, cfg.num_steps) == (horizon, tokens, 10)
    libero = infer_config(Pi0Model(name).param_shapes(), f"{name}_libero")
    assert libero == get_config(f"{name}_libero")


@pytest.mark.parametrize("pi05", [False, True], ids=["pi0", "pi05"])
def test_inference_of_custom_architecture(pi05):
    want = CUSTOM.replace(pi05=pi05, max_token_len=200 if pi05 else 48)
    got = infer_config(random_params(want))
    assert got == want
    assert got.paligemma.num_kv_heads == 2 and got.siglip.image_size == 12 and got.action_dim == 7
    over = infer_config(
        random_params(want), action_horizon=10, max_token_len=64, num_steps=5, dtype="float32"
    )
    assert (over.action_horizon, over.max_token_len, over.num_steps, over.dtype) == (10, 64, 5, "float32")


def test_inference_rejects_contradicting_inputs():
    params = random_params(TINY)
    with pytest.raises(FlowlensError, match="config 'pi05_libero' is pi05 but the checkpoint is pi0"):
        infer_config(params, "pi05_libero")
    with pytest.raises(FlowlensError, match="action_dim=8 contradicts the checkpoint"):
        infer_config(params, action_dim=8)


# ---- errors ------------------------------------------------------------------------------------
def test_missing_directory(tmp_path):
    with pytest.raises(FlowlensError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlowlensError, match="not an openpi checkpoint"):
        load_checkpoint(tmp_path / "empty")
    with pytest.raises(FlowlensError, match="remote"):
        load_params("gs://openpi-assets/checkpoints/pi05_libero")


def test_foreign_tree_is_reported(tmp_path):
    foreign = {"encoder": {"dense": {"kernel": np.ones((3, 4), np.float32)}}}
    save_openpi_checkpoint(foreign, tmp_path)
    with pytest.raises(FlowlensError, match=r"no 'PaliGemma/llm/embedder/input_embedding'.*\['encoder'\]"):
        load_checkpoint(tmp_path)
    with pytest.raises(FlowlensError) as err:
        check_params(foreign, TINY)
    msg = str(err.value)
    assert "PaliGemma/img/Transformer/encoder_norm/bias: expected (32,), found nothing (missing)" in msg
    assert "and 38 more" in msg  # 50 missing, 12 listed


def test_mismatched_shapes_list_expected_and_found(tmp_path):
    params = random_params(TINY)
    flat = flatten_params(params)
    flat["PaliGemma/llm/layers/mlp/linear"] = np.zeros((18, 100, 64), np.float32)
    flat["action_out_proj/bias"] = np.zeros((31,), np.float32)
    bad = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
    save_openpi_checkpoint(bad, tmp_path)
    with pytest.raises(FlowlensError) as err:
        load_checkpoint(tmp_path)
    msg = str(err.value)
    assert "PaliGemma/llm/layers/mlp/linear: expected (18, 128, 64), found (18, 100, 64)" in msg
    assert "action_out_proj/bias: expected (32,), found (31,)" in msg
    assert "2 problems" in msg


def test_check_params_against_wrong_variant():
    with pytest.raises(FlowlensError) as err:
        check_params(random_params(TINY), TINY05)
    msg = str(err.value)
    assert (
        "PaliGemma/llm/layers/pre_attention_norm_1/Dense_0/kernel: expected (18, 32, 96), found nothing"
        in msg
    )


def test_extra_params_dropped_with_warning_or_error_when_strict():
    params = random_params(TINY)
    params["extra"] = {"w": np.zeros(3, np.float32)}
    with pytest.warns(UserWarning, match="dropping 1 parameters"):
        kept = check_params(params, TINY)
    assert "extra" not in kept and param_count(kept) == param_count(random_params(TINY))
    with pytest.raises(FlowlensError, match=r"extra/w: expected nothing .*found \(3,\)"):
        check_params(params, TINY, strict=True)


def test_lora_and_fast_checkpoints_are_named():
    params = random_params(TINY)
    lora = {**params}
    lora["PaliGemma"]["llm"]["layers"]["attn"]["q_einsum"]["lora_a"] = np.zeros((18, 8, 64, 2), np.float32)
    with pytest.raises(FlowlensError, match="LoRA"):
        infer_config(lora)
    fast = random_params(TINY)
    del fast["PaliGemma"]["llm"]["layers"]["attn"]["q_einsum_1"]
    with pytest.raises(FlowlensError, match="Pi0-FAST"):
        infer_config(fast)


# ---- norm stats --------------------------------------------------------------------------------
def _stats(d=8, seed=0):
    rng = np.random.default_rng(seed)
    mean, std = rng.normal(size=d), rng.uniform(0.5, 2, d)
    return NormStats(mean=mean, std=std, q01=mean - 2 * std, q99=mean + 2 * std)


def test_norm_stats_with_checkpoint_in_openpi_format(tmp_path):
    stats = {"state": _stats(8), "actions": _stats(7, 1)}
    save_openpi_checkpoint(
        random_params(TINY), tmp_path, norm_stats=stats, asset_id="physical-intelligence/libero"
    )
    file = tmp_path / "assets" / "physical-intelligence" / "libero" / "norm_stats.json"
    data = json.loads(file.read_text())
    assert set(data["norm_stats"]["state"]) == {"mean", "std", "q01", "q99"}
    ckpt = load_checkpoint(tmp_path)
    np.testing.assert_array_equal(ckpt.norm_stats["actions"].q99, stats["actions"].q99)
    again = load_norm_stats(tmp_path, asset_id="physical-intelligence/libero")
    np.testing.assert_array_equal(again["state"].std, stats["state"].std)
    with pytest.raises(FlowlensError, match="asset_id='libero' is not known"):
        load_norm_stats(tmp_path, asset_id="libero")


def test_checkpoint_without_assets_has_no_stats(tmp_path):
    save_openpi_checkpoint(random_params(TINY), tmp_path)
    assert load_checkpoint(tmp_path).norm_stats is None


def test_normalize_formulas_and_inverse():
    s = _stats(8)
    x = np.random.default_rng(1).normal(size=(4, 8))
    np.testing.assert_allclose(normalize(x, s, quantile=False), (x - s.mean) / (s.std + 1e-6))
    q = normalize(x, s, quantile=True)
    np.testing.assert_allclose(q, (x - s.q01) / (s.q99 - s.q01 + 1e-6) * 2 - 1)
    for quantile in (False, True):
        np.testing.assert_allclose(
            unnormalize(normalize(x, s, quantile=quantile), s, quantile=quantile), x, atol=1e-12
        )


def test_normalize_uses_leading_dims_and_unnormalize_passes_padding():
    s = _stats(8)
    x = np.arange(6.0)
    np.testing.assert_allclose(normalize(x, s, quantile=False), (x - s.mean[:6]) / (s.std[:6] + 1e-6))
    padded = np.arange(32.0)
    zq = unnormalize(padded, s, quantile=True)
    np.testing.assert_array_equal(zq[8:], padded[8:])
    zs = unnormalize(padded, s, quantile=False)
    np.testing.assert_allclose(zs[8:], padded[8:] * (1 + 1e-6))
    with pytest.raises(FlowlensError, match="q01 and q99"):
        normalize(x, NormStats(mean=s.mean, std=s.std), quantile=True)


def test_norm_stats_file_errors(tmp_path):
    with pytest.raises(FlowlensError, match="does not exist"):
        load_norm_stats(tmp_path / "missing.json")
    bad = tmp_path / "norm_stats.json"
    bad.write_text(json.dumps({"state": {}}))
    with pytest.raises(FlowlensError, match="openpi's format"):
        load_norm_stats(bad)
    path = save_norm_stats({"state": _stats(3)}, tmp_path / "x")
    assert pathlib.Path(path).name == "norm_stats.json"
    assert load_norm_stats(path)["state"].mean.shape == (3,)


def test_full_size_libero_checkpoint_gets_libero_settings(tmp_path):
    from flowlens.model.checkpoint import _libero_guess
    from flowlens.model.pi0 import Pi0Model

    shapes = Pi0Model("pi05").param_shapes()
    stats = tmp_path / "ckpt" / "assets" / "physical-intelligence" / "libero" / "norm_stats.json"
    assert _libero_guess(shapes, tmp_path / "pi05_libero", None) == "pi05_libero"
    assert _libero_guess(shapes, tmp_path / "ckpt", stats) == "pi05_libero"
    assert _libero_guess(shapes, tmp_path / "pi05_droid", None) is None
    assert infer_config(shapes, _libero_guess(shapes, tmp_path / "pi05_libero", None)).action_horizon == 10
    assert _libero_guess(random_params(TINY), tmp_path / "libero", None) is None  # tiny: no guess


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_are_refused_naming_the_parameter(tmp_path, bad):
    # orbax (zarr v2 + OCDBT, as openpi writes) keeps no checksum of array data, so a corrupted
    # checkpoint can only be caught where it shows: non-finite weights.
    params = random_params(TINY, 0)
    flat = traverse_util.flatten_dict(params, sep="/")
    flat["action_in_proj/kernel"] = flat["action_in_proj/kernel"].copy()
    flat["action_in_proj/kernel"][1, 2] = bad
    save_openpi_checkpoint(traverse_util.unflatten_dict(flat, sep="/"), tmp_path)
    with pytest.raises(FlowlensError, match=r"'action_in_proj/kernel' holds 1 non-finite value"):
        load_params(tmp_path)
    assert not np.isfinite(flatten_params(load_params(tmp_path, check_finite=False))["action_in_proj/kernel"]).all()
