"""Initialisation of the tabletop model for training from scratch.

openpi's initialisers (:meth:`flowlens.model.pi0.Pi0Model.init`) with three changes, each a
fix for a from-scratch start that openpi never faces (it starts from PaliGemma): the token
embedding's scale, the Pi0.5 adaRMS gates, and a 2-D sin-cos start for the patch position
embedding.
"""

from __future__ import annotations

import numpy as np


def posemb_sincos_2d(grid: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
    """float32 [grid², width]: 2-D sine-cosine position embedding of a row-major patch grid
    (width/4 frequencies each for sin/cos of the row and of the column, as big_vision's ``sincos2d``)."""
    if width % 4:
        raise ValueError(f"width must be a multiple of 4 for a 2-D sin-cos embedding, got {width}")
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    omega = 1.0 / temperature ** (np.arange(width // 4) / max(width // 4 - 1, 1))
    r = rows.reshape(-1, 1) * omega[None]
    c = cols.reshape(-1, 1) * omega[None]
    return np.concatenate([np.sin(c), np.cos(c), np.sin(r), np.cos(r)], axis=1).astype(np.float32)


def init_params(model, rng):
    """Random parameters for training from scratch: openpi's initialisers, except the token
    embedding, drawn with std ``1/sqrt(width)`` instead of flax's 0.01 so that embedded prompt
    tokens (``row * sqrt(width)``) start at unit scale like the image tokens; with 0.01 they start
    about 12x smaller than the image tokens and the prompt is drowned in the first layers.

    Pi0.5 only: openpi zero-initialises the adaRMS modulation (scale, shift, gate), so every
    gated residual branch of the action expert starts closed (gate 0) and the expert does
    nothing until the gates grow; here the gate biases start at 1 (an ordinary residual)."""
    import jax
    import jax.numpy as jnp

    params = model.init(rng)
    # the patch position embedding starts as big_vision's "sincos2d" (still learned): a clean,
    # linearly decodable position for the action tokens to read from an attended patch
    img = params["PaliGemma"]["img"]
    pe = img["pos_embedding"]
    grid = int(round(pe.shape[1] ** 0.5))
    img["pos_embedding"] = jnp.asarray(posemb_sincos_2d(grid, pe.shape[2]))[None].astype(pe.dtype)
    emb = params["PaliGemma"]["llm"]["embedder"]["input_embedding"]
    k = jax.random.fold_in(rng, 1)
    params["PaliGemma"]["llm"]["embedder"]["input_embedding"] = jax.random.normal(k, emb.shape, emb.dtype) / (
        emb.shape[1] ** 0.5
    )
    if model.config.pi05:
        llm = params["PaliGemma"]["llm"]
        w = model.config.action_expert.width
        for norm in (llm["layers"]["pre_attention_norm_1"], llm["layers"]["pre_ffw_norm_1"], llm["final_norm_1"]):
            bias = norm["Dense_0"]["bias"]
            norm["Dense_0"]["bias"] = bias.at[..., 2 * w :].set(jnp.ones_like(bias[..., 2 * w :]))
    return params
