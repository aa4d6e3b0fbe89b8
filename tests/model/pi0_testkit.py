"""Shared helpers for the Pi0 model tests: cached tiny models, observations, a numpy oracle.

Models, parameters and expensive runs are cached per process (``functools.cache``), so every
test module reuses one compilation per distinct run.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import traverse_util

from flowlens.model import CaptureConfig, Observation, Pi0Model, get_config, sample_actions

PROMPT_IDS = [2, 1000, 2000, 3000, 4000, 5000, 108]  # <bos>, 5 pieces, "\n"


@functools.cache
def model(name: str = "test_tiny", dtype: str = "float32") -> Pi0Model:
    cfg = get_config(name).replace(dtype=dtype)
    return Pi0Model(cfg, image_head_zeroinit=False)


@functools.cache
def params(name: str = "test_tiny") -> dict:
    """Random parameters with non-zero norm scales / adaRMS weights (so every path matters)."""
    p = model(name).init(jax.random.key(0))
    flat = traverse_util.flatten_dict(jax.tree.map(np.asarray, p))
    rng = np.random.default_rng(1)
    for k, v in flat.items():
        if ("scale" in k[-1] or "Dense_0" in k) and "llm" in k:
            flat[k] = (0.1 * rng.standard_normal(v.shape)).astype(np.float32)
    return jax.tree.map(np.asarray, traverse_util.unflatten_dict(flat))


def observation(name: str = "test_tiny", batch: int = 2, seed: int = 0) -> Observation:
    """Batch element 0: right wrist masked, 7 prompt tokens; element 1: all cameras, 4 tokens."""
    cfg = get_config(name)
    rng = np.random.default_rng(seed)
    s = cfg.siglip.image_size
    images = {c: rng.uniform(-1, 1, (batch, s, s, 3)).astype(np.float32) for c in cfg.cameras}
    masks = {c: np.ones(batch, bool) for c in cfg.cameras}
    masks["right_wrist_0_rgb"] = np.array([False] + [True] * (batch - 1))
    tokens = np.zeros((batch, cfg.max_token_len), np.int32)
    tmask = np.zeros((batch, cfg.max_token_len), bool)
    for b in range(batch):
        ids = PROMPT_IDS if b == 0 else PROMPT_IDS[:3] + [108]
        tokens[b, : len(ids)] = ids
        tmask[b, : len(ids)] = True
    state = rng.normal(size=(batch, cfg.action_dim)).astype(np.float32)
    return Observation(images=images, image_masks=masks, state=state, tokenized_prompt=tokens,
                       tokenized_prompt_mask=tmask)


def noise(name: str = "test_tiny", batch: int = 2, seed: int = 5) -> np.ndarray:
    cfg = get_config(name)
    shape = (batch, cfg.action_horizon, cfg.action_dim)
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@functools.cache
def full_run(name: str = "test_tiny", num_steps: int = 3):
    """sample_actions with everything captured (all layers, rows, heads, steps)."""
    return sample_actions(model(name), params(name), observation(name), noise=noise(name), num_steps=num_steps,
                                      capture=CaptureConfig())


@functools.cache
def plain_run(name: str = "test_tiny", num_steps: int = 3):
    return sample_actions(model(name), params(name), observation(name), noise=noise(name), num_steps=num_steps)


# ---- an independent numpy (float64) oracle of the joint forward pass --------------------------
def _rms(x, p, cond):
    n = x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-6)
    if cond is None:
        return n * (1 + p["scale"]), None
    mod = cond @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    scale, shift, gate = np.split(mod[:, None, :], 3, axis=-1)
    return n * (1 + scale) + shift, gate


def _rope(x, pos):
    h = x.shape[-1]
    timescale = 10_000 ** (2 * np.arange(h // 2) / h)
    rad = (pos[..., None] / timescale)[:, :, None, :]
    x1, x2 = x[..., : h // 2], x[..., h // 2:]
    return np.concatenate([x1 * np.cos(rad) - x2 * np.sin(rad), x2 * np.cos(rad) + x1 * np.sin(rad)], -1)


def _gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def oracle_probs(llm: dict, x0, x1, mask, positions, cond, depth: int) -> np.ndarray:
    """Attention probabilities [layer, B, head, n, n] of the joint pass, recomputed in float64.

    x0 [B, P, D0] prefix embeddings, x1 [B, T, D1] suffix embeddings, mask bool [B, n, n],
    positions [B, n], cond [B, D1] or None (adaRMS of expert 1).
    """
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    lp = jax.tree.map(f, llm["layers"])
    x0, x1, cond = f(x0), f(x1), None if cond is None else f(cond)
    pos = f(positions)
    p_len = x0.shape[1]
    out = []
    for layer in range(depth):
        at = jax.tree.map(lambda a, layer=layer: a[layer], lp)
        h0, _ = _rms(x0, at["pre_attention_norm"], None)
        h1, g1 = _rms(x1, at["pre_attention_norm_1"], cond)
        a = at["attn"]
        q = np.concatenate([np.einsum("btd,ndh->btnh", h0, a["q_einsum"]["w"]),
                            np.einsum("btd,ndh->btnh", h1, a["q_einsum_1"]["w"])], 1)
        k = np.concatenate([h0 @ a["kv_einsum"]["w"][0, 0], h1 @ a["kv_einsum_1"]["w"][0, 0]], 1)
        v = np.concatenate([h0 @ a["kv_einsum"]["w"][1, 0], h1 @ a["kv_einsum_1"]["w"][1, 0]], 1)
        hd = q.shape[-1]
        q = _rope(q, pos) * hd**-0.5
        k = _rope(k[:, :, None, :], pos)[:, :, 0]
        logits = np.einsum("btnh,bsh->bnts", q, k)
        logits = np.where(mask[:, None], logits, -2.3819763e38)
        logits = logits - logits.max(-1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(-1, keepdims=True)
        out.append(probs)
        enc = np.einsum("bnts,bsh->btnh", probs, v)
        o0 = np.einsum("btnh,nhd->btd", enc[:, :p_len], a["attn_vec_einsum"]["w"])
        o1 = np.einsum("btnh,nhd->btd", enc[:, p_len:], a["attn_vec_einsum_1"]["w"])
        x0 = x0 + o0
        x1 = x1 + (o1 if g1 is None else o1 * g1)
        for i, (x, c) in enumerate(((x0, None), (x1, cond))):
            sfx = "" if i == 0 else "_1"
            h, g = _rms(x, at["pre_ffw_norm" + sfx], c)
            m = at["mlp" + sfx]
            y = (_gelu(h @ m["gating_einsum"][0]) * (h @ m["gating_einsum"][1])) @ m["linear"]
            y = y if g is None else y * g
            if i == 0:
                x0 = x0 + y
            else:
                x1 = x1 + y
    return np.stack(out)
