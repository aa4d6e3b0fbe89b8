"""Model configurations, the registry and the parameter tree of the full-size models (no allocation)."""

import numpy as np
import pytest
from flax import traverse_util

from flowlens.errors import FlowlensError
from flowlens.model import CaptureConfig, GemmaConfig, Pi0Config, Pi0Model, gemma, get_config
from flowlens.model.config import GEMMA_2B, GEMMA_300M, config_names, so400m

L = 18
# Fact sheet §7.2, the llm and projection paths written out literally (full size).
COMMON = {
    "PaliGemma/llm/embedder/input_embedding": (257152, 2048),
    "PaliGemma/llm/layers/attn/q_einsum/w": (L, 8, 2048, 256),
    "PaliGemma/llm/layers/attn/q_einsum_1/w": (L, 8, 1024, 256),
    "PaliGemma/llm/layers/attn/kv_einsum/w": (L, 2, 1, 2048, 256),
    "PaliGemma/llm/layers/attn/kv_einsum_1/w": (L, 2, 1, 1024, 256),
    "PaliGemma/llm/layers/attn/attn_vec_einsum/w": (L, 8, 256, 2048),
    "PaliGemma/llm/layers/attn/attn_vec_einsum_1/w": (L, 8, 256, 1024),
    "PaliGemma/llm/layers/mlp/gating_einsum": (L, 2, 2048, 16384),
    "PaliGemma/llm/layers/mlp/linear": (L, 16384, 2048),
    "PaliGemma/llm/layers/mlp_1/gating_einsum": (L, 2, 1024, 4096),
    "PaliGemma/llm/layers/mlp_1/linear": (L, 4096, 1024),
    "PaliGemma/llm/layers/pre_attention_norm/scale": (L, 2048),
    "PaliGemma/llm/layers/pre_ffw_norm/scale": (L, 2048),
    "PaliGemma/llm/final_norm/scale": (2048,),
    "action_in_proj/kernel": (32, 1024), "action_in_proj/bias": (1024,),
    "action_out_proj/kernel": (1024, 32), "action_out_proj/bias": (32,),
}
PI0 = {
    **COMMON,
    "PaliGemma/llm/layers/pre_attention_norm_1/scale": (L, 1024),
    "PaliGemma/llm/layers/pre_ffw_norm_1/scale": (L, 1024),
    "PaliGemma/llm/final_norm_1/scale": (1024,),
    "state_proj/kernel": (32, 1024), "state_proj/bias": (1024,),
    "action_time_mlp_in/kernel": (2048, 1024), "action_time_mlp_in/bias": (1024,),
    "action_time_mlp_out/kernel": (1024, 1024), "action_time_mlp_out/bias": (1024,),
}
PI05 = {
    **COMMON,
    "PaliGemma/llm/layers/pre_attention_norm_1/Dense_0/kernel": (L, 1024, 3072),
    "PaliGemma/llm/layers/pre_attention_norm_1/Dense_0/bias": (L, 3072),
    "PaliGemma/llm/layers/pre_ffw_norm_1/Dense_0/kernel": (L, 1024, 3072),
    "PaliGemma/llm/layers/pre_ffw_norm_1/Dense_0/bias": (L, 3072),
    "PaliGemma/llm/final_norm_1/Dense_0/kernel": (1024, 3072),
    "PaliGemma/llm/final_norm_1/Dense_0/bias": (3072,),
    "time_mlp_in/kernel": (1024, 1024), "time_mlp_in/bias": (1024,),
    "time_mlp_out/kernel": (1024, 1024), "time_mlp_out/bias": (1024,),
}


def _shapes(tree):
    return {"/".join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(tree).items()}


@pytest.mark.parametrize(("name", "expected", "leaves", "total"), [
    ("pi0", PI0, 50, 3_238_048_528),
    ("pi05", PI05, 51, 3_353_433_872),
], ids=["pi0", "pi05"])
def test_full_size_parameter_tree_equals_openpi(name, expected, leaves, total):
    shapes = _shapes(Pi0Model(name).param_shapes())  # jax.eval_shape: nothing is allocated
    non_img = {k: v for k, v in shapes.items() if not k.startswith("PaliGemma/img/")}
    assert non_img == expected
    assert len(shapes) == leaves
    assert sum(int(np.prod(s)) for s in shapes.values()) == total


def test_full_size_part_counts():
    shapes = _shapes(Pi0Model("pi0").param_shapes())
    count = lambda pred: sum(int(np.prod(s)) for k, s in shapes.items() if pred(k))  # noqa: E731
    llm = lambda k: k.startswith("PaliGemma/llm/")  # noqa: E731
    expert1 = lambda k: llm(k) and ("_1/" in k or k.endswith("_1"))  # noqa: E731
    assert count(lambda k: llm(k) and not expert1(k)) == 2_508_531_712
    assert count(expert1) == 311_464_960
    assert count(lambda k: not k.startswith("PaliGemma/")) == 3_248_160
    assert count(lambda k: k.startswith("PaliGemma/img/")) == 414_803_696
    shapes05 = _shapes(Pi0Model("pi05").param_shapes())
    assert sum(int(np.prod(s)) for k, s in shapes05.items() if expert1(k)) == 427_932_672
    assert gemma.param_count([GEMMA_2B, GEMMA_300M], adarms=[False, True], vocab_size=257152) == \
        2_508_531_712 + 427_932_672


def test_dummy_and_test_configs_keep_the_attention_geometry():
    assert sum(int(np.prod(s)) for s in _shapes(Pi0Model("dummy").param_shapes()).values()) == 429_337_808
    for name in ("test_tiny", "test_tiny_pi05", "test_small"):
        cfg = get_config(name)
        assert (cfg.num_layers, cfg.num_heads, cfg.paligemma.num_kv_heads) == (18, 8, 1)


@pytest.mark.parametrize(("name", "prefix", "suffix"), [
    ("pi0_libero", 816, 51), ("pi05_libero", 968, 10), ("pi05", 968, 50), ("test_tiny", 60, 9),
], ids=lambda v: str(v))
def test_sequence_sizes(name, prefix, suffix):
    cfg = get_config(name)
    assert (cfg.prefix_len, cfg.suffix_len) == (prefix, suffix)


def test_registry_did_you_mean_and_validation():
    assert {"pi0", "pi05", "pi0_libero", "pi05_libero", "dummy", "test_tiny"} <= set(config_names())
    with pytest.raises(FlowlensError, match="Did you mean 'pi05_libero'"):
        get_config("pi05_libro")
    with pytest.raises(FlowlensError, match="share head_dim"):
        Pi0Config(paligemma=GEMMA_2B, action_expert=GEMMA_300M.__class__(1024, 18, 4096, 8, 1, 128),
                  siglip=so400m(2048))
    with pytest.raises(FlowlensError, match="out_dim"):
        Pi0Config(paligemma=GEMMA_2B, action_expert=GEMMA_300M, siglip=so400m(64))
    with pytest.raises(FlowlensError, match="multiple of num_kv_heads"):
        GemmaConfig(64, 4, 128, 8, 3, 16)
    with pytest.raises(FlowlensError, match="dtype"):
        get_config("pi0").replace(dtype="float16")


def test_capture_config_normalises_and_rejects():
    cfg = CaptureConfig(layers=range(3, 0, -1), steps=[2, 0], query_rows=np.array([5, 3]))
    assert cfg.layers == (1, 2, 3) and cfg.steps == (0, 2) and cfg.query_rows == (3, 5)
    hash(cfg)
    with pytest.raises(FlowlensError, match="Did you mean 'mean'"):
        CaptureConfig(heads="meen")
    with pytest.raises(FlowlensError, match="layer 18"):
        CaptureConfig(layers=[18]).resolve_layers(18)
    with pytest.raises(FlowlensError, match="step 10"):
        CaptureConfig(steps=[10]).resolve_steps(10)
    from flowlens.core.openpi_layout import pi0_layout
    lay = pi0_layout()
    assert list(CaptureConfig(query_rows="actions").resolve_rows(lay)) == list(range(817, 867))
    assert list(CaptureConfig(query_rows=("state", "actions")).resolve_rows(lay)) == list(range(816, 867))
    assert CaptureConfig(query_rows="valid").resolve_rows(lay).size == lay.valid.sum()
    with pytest.raises(FlowlensError, match="Did you mean 'words'"):
        CaptureConfig(query_rows="wrds").resolve_rows(lay)
