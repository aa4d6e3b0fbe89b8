"""PyTorch-layout checkpoints (openpi converter, LeRobot): reader, export, Pi0 / Pi0.5 round trips.

The JAX → PyTorch conversion below is written independently from the converter's documented rules
(openpi ``examples/convert_jax_model_to_pytorch.py``, table in attribution_and_ecosystem.md §2),
one explicit loop per module, and the files are written by a minimal safetensors writer of the
test's own — so neither flowlens' mapping table nor its writer is its own oracle.
"""

import json
import struct

import jax
import ml_dtypes
import numpy as np
import pytest

from flowlens.errors import FlowlensError
from flowlens.model import CaptureConfig, sample_actions
from flowlens.model.checkpoint import flatten_params, load_checkpoint
from flowlens.model.safetensors_io import SafetensorsFile, write_safetensors
from flowlens.model.torch_checkpoint import save_torch_checkpoint
from tests.model import pi0_testkit as kit

P = "paligemma_with_expert."


def _st_write(path, tensors: dict, metadata=None):
    codes = {np.dtype("float32"): "F32", np.dtype(ml_dtypes.bfloat16): "BF16"}
    header, off, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name, a in tensors.items():
        b = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": codes[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def convert(params: dict, pi05: bool) -> dict:
    """openpi tree → PyTorch names, from the converter's rules (general reshapes)."""
    f = flatten_params(params)
    out = {}
    vis = P + "paligemma.model.vision_tower.vision_model."
    out[vis + "embeddings.patch_embedding.weight"] = f["PaliGemma/img/embedding/kernel"].transpose(3, 2, 0, 1)
    out[vis + "embeddings.patch_embedding.bias"] = f["PaliGemma/img/embedding/bias"]
    pos = f["PaliGemma/img/pos_embedding"]
    out[vis + "embeddings.position_embedding.weight"] = pos.reshape(-1, pos.shape[-1])
    blk = "PaliGemma/img/Transformer/encoderblock/"
    for i in range(f[blk + "LayerNorm_0/scale"].shape[0]):
        t = f"{vis}encoder.layers.{i}."
        out[t + "layer_norm1.weight"] = f[blk + "LayerNorm_0/scale"][i]
        out[t + "layer_norm1.bias"] = f[blk + "LayerNorm_0/bias"][i]
        out[t + "layer_norm2.weight"] = f[blk + "LayerNorm_1/scale"][i]
        out[t + "layer_norm2.bias"] = f[blk + "LayerNorm_1/bias"][i]
        out[t + "mlp.fc1.weight"] = f[blk + "MlpBlock_0/Dense_0/kernel"][i].T
        out[t + "mlp.fc1.bias"] = f[blk + "MlpBlock_0/Dense_0/bias"][i]
        out[t + "mlp.fc2.weight"] = f[blk + "MlpBlock_0/Dense_1/kernel"][i].T
        out[t + "mlp.fc2.bias"] = f[blk + "MlpBlock_0/Dense_1/bias"][i]
        for jn, tn in (("query", "q"), ("key", "k"), ("value", "v")):
            k = f[blk + f"MultiHeadDotProductAttention_0/{jn}/kernel"][i]  # [W, heads, hd]
            out[t + f"self_attn.{tn}_proj.weight"] = k.reshape(k.shape[0], -1).T
            out[t + f"self_attn.{tn}_proj.bias"] = f[blk + f"MultiHeadDotProductAttention_0/{jn}/bias"][i].reshape(-1)
        o = f[blk + "MultiHeadDotProductAttention_0/out/kernel"][i]  # [heads, hd, W]
        out[t + "self_attn.out_proj.weight"] = o.reshape(-1, o.shape[-1]).T
        out[t + "self_attn.out_proj.bias"] = f[blk + "MultiHeadDotProductAttention_0/out/bias"][i]
    out[vis + "post_layernorm.weight"] = f["PaliGemma/img/Transformer/encoder_norm/scale"]
    out[vis + "post_layernorm.bias"] = f["PaliGemma/img/Transformer/encoder_norm/bias"]
    out[P + "paligemma.model.multi_modal_projector.linear.weight"] = f["PaliGemma/img/head/kernel"].T
    out[P + "paligemma.model.multi_modal_projector.linear.bias"] = f["PaliGemma/img/head/bias"]
    out[P + "paligemma.model.language_model.embed_tokens.weight"] = f["PaliGemma/llm/embedder/input_embedding"]
    llm = "PaliGemma/llm/"
    for sfx, tp, ada in (("", P + "paligemma.model.language_model.", False), ("_1", P + "gemma_expert.model.", pi05)):
        q = f[f"{llm}layers/attn/q_einsum{sfx}/w"]  # [L, N, D, H]
        kv = f[f"{llm}layers/attn/kv_einsum{sfx}/w"]  # [L, 2, K, D, H]
        av = f[f"{llm}layers/attn/attn_vec_einsum{sfx}/w"]  # [L, N, H, D]
        g = f[f"{llm}layers/mlp{sfx}/gating_einsum"]
        lin = f[f"{llm}layers/mlp{sfx}/linear"]
        L, N, D, H = q.shape  # noqa: N806
        for i in range(L):
            t = f"{tp}layers.{i}."
            out[t + "self_attn.q_proj.weight"] = q[i].transpose(0, 2, 1).reshape(N * H, D)
            out[t + "self_attn.k_proj.weight"] = kv[i, 0].transpose(0, 2, 1).reshape(-1, D)
            out[t + "self_attn.v_proj.weight"] = kv[i, 1].transpose(0, 2, 1).reshape(-1, D)
            out[t + "self_attn.o_proj.weight"] = av[i].reshape(N * H, D).T
            out[t + "mlp.gate_proj.weight"] = g[i, 0].T
            out[t + "mlp.up_proj.weight"] = g[i, 1].T
            out[t + "mlp.down_proj.weight"] = lin[i].T
            for jn, tn in (("pre_attention_norm", "input_layernorm"), ("pre_ffw_norm", "post_attention_layernorm")):
                if ada:
                    out[t + f"{tn}.dense.weight"] = f[f"{llm}layers/{jn}{sfx}/Dense_0/kernel"][i].T
                    out[t + f"{tn}.dense.bias"] = f[f"{llm}layers/{jn}{sfx}/Dense_0/bias"][i]
                else:
                    out[t + f"{tn}.weight"] = f[f"{llm}layers/{jn}{sfx}/scale"][i]
        if ada:
            out[tp + "norm.dense.weight"] = f[f"{llm}final_norm{sfx}/Dense_0/kernel"].T
            out[tp + "norm.dense.bias"] = f[f"{llm}final_norm{sfx}/Dense_0/bias"]
        else:
            out[tp + "norm.weight"] = f[f"{llm}final_norm{sfx}/scale"]
    for name in ("action_in_proj", "action_out_proj") + (
        ("time_mlp_in", "time_mlp_out") if pi05 else ("state_proj", "action_time_mlp_in", "action_time_mlp_out")
    ):
        out[name + ".weight"] = f[name + "/kernel"].T
        out[name + ".bias"] = f[name + "/bias"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def write_layout(root, params, name, layout, dtype=np.float32):
    cfg = kit.model(name).config
    tensors = {k: v.astype(dtype) for k, v in convert(params, cfg.pi05).items()}
    root.mkdir(parents=True, exist_ok=True)
    if layout == "lerobot":
        tensors = {"model." + k: v for k, v in tensors.items()}
        conf = {"type": cfg.variant, "chunk_size": cfg.action_horizon, "tokenizer_max_length": cfg.max_token_len}
    else:
        conf = {"action_dim": cfg.action_dim, "action_horizon": cfg.action_horizon, "paligemma_variant": "x",
                "action_expert_variant": "y", "precision": "float32"}
    _st_write(root / "model.safetensors", tensors)
    (root / "config.json").write_text(json.dumps(conf))
    return tensors


def _attention(name, params):
    _, capture = sample_actions(kit.model(name), params, kit.observation(name), noise=kit.noise(name), num_steps=2,
                                capture=CaptureConfig())
    return [np.asarray(p.probs) for p in capture.passes]


@pytest.mark.parametrize("name", ["test_tiny", "test_tiny_pi05"])
@pytest.mark.parametrize("layout", ["openpi", "lerobot"])
def test_pytorch_layouts_load_bit_identical_params_and_attention(tmp_path, name, layout):
    params = kit.params(name)
    write_layout(tmp_path / "ck", params, name, layout)
    ckpt = load_checkpoint(tmp_path / "ck", name)
    assert ckpt.config == kit.model(name).config
    got, want = flatten_params(ckpt.params), flatten_params(params)
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == np.float32, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    # attention of the loaded model vs the JAX original
    a_ref = _attention(name, params)
    a_got = _attention(name, jax.tree.map(np.asarray, ckpt.params))
    assert len(a_got) == len(a_ref) == 3  # prefix + 2 denoising steps
    for got_pass, ref_pass in zip(a_got, a_ref, strict=True):
        np.testing.assert_allclose(got_pass, ref_pass, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["test_tiny", "test_tiny_pi05"])
def test_export_matches_the_independent_conversion_and_reads_back(tmp_path, name):
    params, cfg = kit.params(name), kit.model(name).config
    want = write_layout(tmp_path / "ref", params, name, "openpi")
    save_torch_checkpoint(params, cfg, tmp_path / "out")
    with SafetensorsFile(tmp_path / "out" / "model.safetensors") as st:
        assert sorted(st.keys()) == sorted(want)
        for k, v in want.items():
            np.testing.assert_array_equal(np.asarray(st.get(k)), v, err_msg=k)
    # no config= needed: the head counts travel in the header metadata
    back = load_checkpoint(tmp_path / "out", dtype="float32")
    assert back.config.pi05 == cfg.pi05 and back.config.paligemma == cfg.paligemma
    assert back.config.siglip == cfg.siglip and back.config.dtype == "float32"
    for k, v in flatten_params(params).items():
        np.testing.assert_array_equal(flatten_params(back.params)[k], v, err_msg=k)
    save_torch_checkpoint(params, cfg, tmp_path / "lr", layout="lerobot")
    with SafetensorsFile(tmp_path / "lr" / "model.safetensors") as st:
        assert all(k.startswith("model.paligemma_with_expert.") or k.startswith("model.") for k in st.keys())
    lr = load_checkpoint(tmp_path / "lr", dtype="float32")
    assert lr.config.action_horizon == cfg.action_horizon and lr.config.max_token_len == cfg.max_token_len


def test_bfloat16_file_and_dtype_choice(tmp_path):
    params = kit.params("test_tiny")
    write_layout(tmp_path / "ck", params, "test_tiny", "openpi", dtype=ml_dtypes.bfloat16)
    key = "PaliGemma/llm/layers/attn/q_einsum_1/w"
    want = flatten_params(params)[key].astype(ml_dtypes.bfloat16)
    bf = load_checkpoint(tmp_path / "ck", "test_tiny", dtype="bfloat16")
    assert bf.config.dtype == "bfloat16"
    got = flatten_params(bf.params)[key]
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got, want)
    f32 = load_checkpoint(tmp_path / "ck", "test_tiny", dtype="float32")
    assert f32.config.dtype == "float32" and flatten_params(f32.params)[key].dtype == np.float32
    np.testing.assert_array_equal(flatten_params(f32.params)[key], want.astype(np.float32))


def test_pi05_is_recognised_from_the_keys_not_the_folder_name(tmp_path):
    write_layout(tmp_path / "pi0_not_pi05", kit.params("test_tiny_pi05"), "test_tiny_pi05", "openpi")
    ckpt = load_checkpoint(tmp_path / "pi0_not_pi05", "test_tiny_pi05")
    assert ckpt.config.pi05
    with pytest.raises(FlowlensError, match="is pi0 but the checkpoint is pi05"):
        load_checkpoint(tmp_path / "pi0_not_pi05", "test_tiny")


def test_lerobot_normalizer_file_gives_norm_stats(tmp_path):
    write_layout(tmp_path / "ck", kit.params("test_tiny"), "test_tiny", "lerobot")
    stats = {"observation.state.mean": np.arange(8, dtype=np.float32), "observation.state.std": np.ones(8, np.float32),
             "action.mean": np.full(7, 2.0, np.float32), "action.std": np.full(7, 3.0, np.float32),
             "action.q01": np.full(7, -1.0, np.float32), "action.q99": np.full(7, 1.0, np.float32),
             "observation.images.image.mean": np.zeros((3, 1, 1), np.float32)}
    _st_write(tmp_path / "ck" / "policy_preprocessor_step_5_normalizer_processor.safetensors", stats)
    ns = load_checkpoint(tmp_path / "ck", "test_tiny").norm_stats
    assert sorted(ns) == ["actions", "state"]
    assert ns["state"].mean.tolist() == list(range(8)) and ns["state"].q01 is None
    assert ns["actions"].std.tolist() == [3.0] * 7 and ns["actions"].q99.tolist() == [1.0] * 7


def test_tied_embedding_and_older_transformers_names(tmp_path):
    """The token embedding saved under the tied lm_head name; PaliGemma submodules under the names of
    older transformers releases (``paligemma.language_model.model.``, ``paligemma.vision_tower.``)."""
    params = kit.params("test_tiny")
    tensors = write_layout(tmp_path / "ck", params, "test_tiny", "lerobot")
    old = {}
    for k, v in tensors.items():
        k = k.replace("paligemma.model.language_model.embed_tokens.", "paligemma.lm_head.")
        k = k.replace("paligemma.model.language_model.", "paligemma.language_model.model.")
        old[k.replace("paligemma.model.vision_tower.", "paligemma.vision_tower.")] = v
    old["model.paligemma_with_expert.gemma_expert.lm_head.weight"] = np.zeros((3, 32), np.float32)  # ignored
    assert "model.paligemma_with_expert.paligemma.lm_head.weight" in old
    _st_write(tmp_path / "ck" / "model.safetensors", old)
    got = flatten_params(load_checkpoint(tmp_path / "ck", "test_tiny").params)
    for k, v in flatten_params(params).items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_errors_name_the_kind_and_the_bad_tensors(tmp_path):
    tensors = write_layout(tmp_path / "ck", kit.params("test_tiny"), "test_tiny", "lerobot")
    bad = dict(tensors)
    del bad["model.action_out_proj.bias"]
    bad["model.state_proj.weight"] = bad["model.state_proj.weight"][:, :5].copy()
    _st_write(tmp_path / "ck" / "model.safetensors", bad)
    with pytest.raises(FlowlensError) as e:
        load_checkpoint(tmp_path / "ck", "test_tiny")
    msg = str(e.value)
    assert "(lerobot layout)" in msg and "2 tensors do not fit" in msg
    assert "model.action_out_proj.bias: expected (32,), found nothing (missing)" in msg
    assert "model.state_proj.weight: expected (32, 32), found (32, 5)" in msg


def test_a_folder_of_neither_kind_names_both(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "weights.bin").write_bytes(b"0")
    with pytest.raises(FlowlensError, match=r"params/ folder .* or a model\.safetensors .*found \['weights.bin'\]"):
        load_checkpoint(tmp_path / "x")


def test_safetensors_reader_and_writer_literal(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([1.5, -2.0], ml_dtypes.bfloat16)
    write_safetensors(tmp_path / "x.safetensors", {"a": a, "b": b}, metadata={"k": "v"})
    raw = (tmp_path / "x.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n])
    assert header["a"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
    assert header["b"] == {"dtype": "BF16", "shape": [2], "data_offsets": [24, 28]}
    assert raw[8 + n + 24:] == bytes([0xC0, 0x3F, 0x00, 0xC0])  # bf16 1.5, -2.0 little-endian
    with SafetensorsFile(tmp_path / "x.safetensors") as st:
        assert st.metadata == {"k": "v"} and st.shape("a") == (2, 3) and st.nbytes == 28
        np.testing.assert_array_equal(st.get("a"), a)
        assert st.get("b").dtype == ml_dtypes.bfloat16 and st.get("b").tolist() == [1.5, -2.0]
        st.release("a")
        np.testing.assert_array_equal(st.get("a"), a)
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(FlowlensError, match="is not a safetensors file"):
        SafetensorsFile(tmp_path / "bad.safetensors")
