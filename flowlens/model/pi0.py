"""Pi0 / Pi0.5: the flow-matching VLA policy (openpi's ``pi0.py``) with capture and knockouts.

The *prefix* is every camera's SigLIP patch tokens followed by the embedded prompt tokens
(PaliGemma expert, bidirectional). The *suffix* is, for Pi0, one robot-state token (its own
attention block) and the ``action_horizon`` noisy action tokens mixed with the flow time by an
MLP; for Pi0.5 only the action tokens, the time entering every action-expert norm through adaRMS.
The mask is openpi's block-causal ``make_attn_mask``; RoPE positions are ``cumsum(valid) - 1``.

Parameters are the openpi checkpoint tree as a nested dict: ``PaliGemma/img`` (SigLIP),
``PaliGemma/llm`` (the Gemma mixture, :mod:`flowlens.model.gemma`) and the projections
(``state_proj``, ``action_in_proj``, ``action_out_proj``, ``action_time_mlp_in/out`` for Pi0,
``time_mlp_in/out`` for Pi0.5; kernels ``[in, out]``).

:class:`Pi0Model` offers ``init``, ``param_shapes``, ``embed_prefix``, ``embed_suffix``,
``forward`` (training-style full pass, optional FULL capture), ``compute_loss``, ``layout`` (the
TokenLayout of an Observation). Sampling is :func:`flowlens.model.sampler.sample_actions`
``(model, params, obs, ...)``: the sampler imports this module, never the reverse.
"""

from __future__ import annotations

import functools

import einops
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from flowlens.core.capture import AttentionPass, Capture, PassKind
from flowlens.core.layout import TokenLayout
from flowlens.core.openpi_layout import openpi_layout
from flowlens.core.segments import TextSegment
from flowlens.errors import FlowlensError
from flowlens.model import gemma
from flowlens.model.capture_config import CaptureConfig
from flowlens.model.config import Pi0Config, get_config
from flowlens.model.knockout import edit_for, resolve_plan
from flowlens.model.observation import Observation, check_observation

# PaliGemma SentencePiece ids used to label prompts when no TextSegment is given.
_SPECIAL_IDS = {2: "<bos>", 1: "<eos>", 108: "\n"}


def make_attn_mask(input_mask: jax.Array, mask_ar: jax.Array) -> jax.Array:
    """openpi's block-causal mask: bool [B, N] valid, bool [N] or [B, N] "opens a block" → [B, N, N]."""
    mask_ar = jnp.broadcast_to(mask_ar, input_mask.shape)
    cumsum = jnp.cumsum(mask_ar, axis=1)
    attn = cumsum[:, None, :] <= cumsum[:, :, None]
    valid = input_mask[:, None, :] * input_mask[:, :, None]
    return jnp.logical_and(attn, valid)


def posemb_sincos(pos: jax.Array, embedding_dim: int, min_period: float, max_period: float) -> jax.Array:
    """Sine-cosine embedding of scalar positions: float [B] → float32 [B, embedding_dim] (sin | cos)."""
    if embedding_dim % 2:
        raise FlowlensError(f"embedding_dim must be even, got {embedding_dim}.")
    fraction = jnp.linspace(0.0, 1.0, embedding_dim // 2)
    period = min_period * (max_period / min_period) ** fraction
    x = jnp.einsum("i,j->ij", pos, 1.0 / period * 2 * jnp.pi, precision=jax.lax.Precision.HIGHEST)
    return jnp.concatenate([jnp.sin(x), jnp.cos(x)], axis=-1)


def linear(p: dict, x: jax.Array) -> jax.Array:
    """nnx.Linear: ``x @ kernel + bias`` in the promoted dtype of input and parameters."""
    dtypes = {jnp.dtype(x.dtype), jnp.dtype(p["kernel"].dtype), jnp.dtype(p["bias"].dtype)}
    dtype = jnp.dtype(jnp.float32) if len(dtypes) > 1 else dtypes.pop()  # bf16 with f32 promotes to f32
    bias = p["bias"].astype(dtype)
    bias = bias.reshape((1,) * (x.ndim - 1) + bias.shape)
    return jnp.dot(x.astype(dtype), p["kernel"].astype(dtype)) + bias


class Pi0Model:
    """A Pi0 / Pi0.5 policy of a given configuration (stateless: parameters are passed in).

    Args:
      config: a Pi0Config or a registry name ("pi0", "pi05_libero", "test_tiny", ...).
      image_encoder: a linen module ``(images [B, S, S, 3]) -> tokens [B, P, D0]`` whose params
        live under ``PaliGemma/img``; default :class:`flowlens.model.siglip.Siglip`.
      image_head_zeroinit: openpi zero-initialises the SigLIP head (image tokens are all zero in a
        fresh model); pass False for random models whose images should matter (tests, benchmarks).
    """

    def __init__(self, config: Pi0Config | str, *, image_encoder: nn.Module | None = None,
                 image_head_zeroinit: bool = True):
        self.config = get_config(config)
        if image_encoder is None:
            from flowlens.model.siglip import Siglip
            image_encoder = Siglip(self.config.siglip, dtype=self.config.dtype,
                                   head_zeroinit=image_head_zeroinit)
        self.image_encoder = image_encoder
        self._jitted: dict = {}

    def __repr__(self) -> str:
        return f"Pi0Model({self.config.name}, {self.config.variant}, dtype={self.config.dtype})"

    @property
    def experts(self) -> tuple:
        return (self.config.paligemma, self.config.action_expert)

    @property
    def adarms(self) -> tuple[bool, bool]:
        return (False, self.config.pi05)

    @property
    def dtype(self):
        return jnp.dtype(self.config.dtype)

    # ---- parameters ---------------------------------------------------------------------------
    def init(self, rng: jax.Array, *, param_dtype=jnp.float32) -> dict:
        """Random parameters with openpi's tree and initialisers.

        Small models are created by one compiled function; large ones (full-size Pi0: 3.2 B
        parameters) array by array, so no float32 copy of the whole model is ever held
        (``param_dtype=jnp.bfloat16`` then needs ~6.5 GB).
        """
        param_dtype = jnp.dtype(param_dtype)
        size = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(self.param_shapes()))
        if size <= gemma.ONE_DRAW_LIMIT:
            return jax.jit(functools.partial(self._init, param_dtype=param_dtype))(rng)
        return self._init(rng, param_dtype=param_dtype, image_init=jax.jit(self.image_encoder.init))

    def _init(self, rng, *, param_dtype, image_init=None):
        cfg = self.config
        k_img, k_llm, k_proj = jax.random.split(rng, 3)
        s = cfg.siglip.image_size
        image_init = image_init or self.image_encoder.init
        img = image_init(k_img, jnp.zeros((1, s, s, 3), jnp.float32))["params"]
        img = jax.tree.map(lambda a: a.astype(param_dtype), img)
        llm = gemma.init_params(k_llm, self.experts, adarms=self.adarms, vocab_size=cfg.vocab_size,
                                param_dtype=param_dtype)
        w, a = cfg.action_expert.width, cfg.action_dim
        keys = iter(jax.random.split(k_proj, 8))

        def lin(n_in, n_out):
            kernel = gemma.lecun_normal(next(keys), (n_in, n_out), param_dtype, n_in)
            return {"kernel": kernel, "bias": jnp.zeros((n_out,), param_dtype)}

        params = {"PaliGemma": {"img": img, "llm": llm}, "action_in_proj": lin(a, w),
                  "action_out_proj": lin(w, a)}
        if cfg.pi05:
            params.update(time_mlp_in=lin(w, w), time_mlp_out=lin(w, w))
        else:
            params.update(state_proj=lin(a, w), action_time_mlp_in=lin(2 * w, w),
                          action_time_mlp_out=lin(w, w))
        return params

    def param_shapes(self) -> dict:
        """The parameter tree as ``jax.ShapeDtypeStruct`` leaves, without allocating anything."""
        return jax.eval_shape(functools.partial(self._init, param_dtype=jnp.dtype(jnp.float32)),
                              jax.random.key(0))

    # ---- embeddings ---------------------------------------------------------------------------
    def encode_images(self, params: dict, images: jax.Array) -> jax.Array:
        """float32 [B, S, S, 3] in [-1, 1] → image tokens [B, P, D0]."""
        return self.image_encoder.apply({"params": params["PaliGemma"]["img"]}, images)

    def embed_prefix(self, params: dict, images, image_masks, tokens, token_mask):
        """Prefix tokens: cameras (in the given order) then the prompt.

        Args:
          images: per camera float32 [B, S, S, 3].
          image_masks: bool [B, cameras].
          tokens: int32 [B, max_token_len]; token_mask: bool [B, max_token_len].

        Returns:
          (tokens [B, P, D0], input_mask bool [B, P], ar_mask bool [P], image_tokens per camera).
        """
        embs, masks, image_tokens = [], [], []
        for c, img in enumerate(images):
            t = self.encode_images(params, img)
            image_tokens.append(t)
            embs.append(t.astype(self.dtype))
            masks.append(einops.repeat(image_masks[:, c], "b -> b s", s=t.shape[1]))
        embs.append(gemma.embed_tokens(params["PaliGemma"]["llm"], tokens, self.dtype))
        masks.append(token_mask)
        x = jnp.concatenate(embs, axis=1)
        input_mask = jnp.concatenate(masks, axis=1)
        return x, input_mask, jnp.zeros((x.shape[1],), dtype=bool), image_tokens

    def embed_suffix(self, params: dict, state: jax.Array, noisy_actions: jax.Array, time: jax.Array):
        """Suffix tokens.

        Args:
          state: float32 [B, action_dim] (unused by Pi0.5).
          noisy_actions: float32 [B, H_a, action_dim].
          time: float32 [B] flow time (1 = noise, 0 = data).

        Returns:
          (tokens [B, T_s, W], input_mask bool [B, T_s], ar_mask bool [T_s], adarms_cond [B, W] or None).
        """
        cfg = self.config
        embs, ar = [], []
        if not cfg.pi05:
            embs.append(linear(params["state_proj"], state)[:, None, :])
            ar.append(True)
        action_tokens = linear(params["action_in_proj"], noisy_actions)
        time_emb = posemb_sincos(time, cfg.action_expert.width, min_period=4e-3, max_period=4.0)
        if cfg.pi05:
            time_emb = jax.nn.swish(linear(params["time_mlp_in"], time_emb))
            cond = jax.nn.swish(linear(params["time_mlp_out"], time_emb))
            expert_tokens = action_tokens
        else:
            time_tokens = einops.repeat(time_emb, "b emb -> b s emb", s=cfg.action_horizon)
            x = jnp.concatenate([action_tokens, time_tokens], axis=-1)
            x = jax.nn.swish(linear(params["action_time_mlp_in"], x))
            expert_tokens = linear(params["action_time_mlp_out"], x)
            cond = None
        embs.append(expert_tokens)
        ar += [True] + [False] * (cfg.action_horizon - 1)
        x = jnp.concatenate(embs, axis=1)
        return x, jnp.ones(x.shape[:2], dtype=bool), jnp.asarray(ar), cond

    def obs_arrays(self, obs: Observation):
        """(images tuple in camera order, image_masks [B, C], state, tokens, token_mask) as jax arrays."""
        cams = obs.cameras
        masks = jnp.stack([jnp.asarray(obs.image_masks.get(c, np.ones(obs.batch_size, bool)), dtype=bool)
                           .reshape(-1) for c in cams], axis=1)
        return (tuple(jnp.asarray(obs.images[c], jnp.float32) for c in cams), masks,
                jnp.asarray(obs.state, jnp.float32), jnp.asarray(obs.tokenized_prompt, jnp.int32),
                jnp.asarray(obs.tokenized_prompt_mask, bool))

    def check(self, obs: Observation) -> None:
        cfg = self.config
        check_observation(obs, action_dim=cfg.action_dim, max_token_len=cfg.max_token_len,
                          image_size=cfg.siglip.image_size)

    # ---- layout -------------------------------------------------------------------------------
    def layout(self, obs: Observation, batch_index: int = 0) -> TokenLayout:
        """The TokenLayout of batch element ``batch_index`` built from the real inputs: cameras
        (masked per image_masks), the prompt (the Observation's TextSegment, or generic pieces
        from the ids), the state token (Pi0 only) and the actions."""
        cfg = self.config
        if not 0 <= batch_index < obs.batch_size:
            raise FlowlensError(
                f"batch_index {batch_index} out of range: the batch has {obs.batch_size} elements.")
        cams = obs.cameras
        mask = np.asarray(obs.tokenized_prompt_mask)[batch_index].astype(bool)
        text = obs.text_segment(batch_index)
        if text is None:
            ids = np.asarray(obs.tokenized_prompt)[batch_index]
            pieces = [("<pad>" if not ok else _SPECIAL_IDS.get(int(i), f"▁<{int(i)}>"))
                      for i, ok in zip(ids, mask, strict=True)]
            text = TextSegment.from_pieces(start=0, token_ids=ids.tolist(), pieces=pieces,
                                           valid=mask.tolist())
        elif not np.array_equal(np.asarray(text.valid, dtype=bool), mask):
            raise FlowlensError(
                "Observation.text does not match tokenized_prompt_mask (valid tokens differ); build both "
                "from the same tokenizer call."
            )
        return openpi_layout(
            variant=cfg.variant, prompt=text, max_token_len=cfg.max_token_len,
            action_horizon=cfg.action_horizon,
            cameras=cams, camera_valid=[bool(obs.image_mask(c)[batch_index]) for c in cams],
            grid=cfg.siglip.grid, patch_size=cfg.siglip.patch_size,
            transforms=[obs.transform(c) for c in cams],
            state_token=not cfg.pi05,
        )

    # ---- training-style full pass -------------------------------------------------------------
    def forward_arrays(self, params, arrays, noisy_actions, time, *, capture=None, edit=None, remat=False):
        """The full pass on arrays: returns (v_t float32 [B, H_a, action_dim], captured or None)."""
        v_t, _, _, cap = self.forward_outputs(params, arrays, noisy_actions, time, capture=capture, edit=edit,
                                              remat=remat)
        return v_t, cap

    def forward_outputs(self, params, arrays, noisy_actions, time, *, capture=None, edit=None, remat=False):
        """The full pass on arrays, with the prefix's outputs too (training heads read them).

        Returns:
          (v_t float32 [B, H_a, action_dim], prefix_out [B, P, D0] final-normed prefix hidden states,
          prefix_mask bool [B, P], captured or None).
        """
        images, image_masks, state, tokens, token_mask = arrays
        cfg = self.config
        pre, pre_mask, pre_ar, _ = self.embed_prefix(params, images, image_masks, tokens, token_mask)
        suf, suf_mask, suf_ar, cond = self.embed_suffix(params, state, noisy_actions, time)
        input_mask = jnp.concatenate([pre_mask, suf_mask], axis=1)
        ar = jnp.concatenate([pre_ar, suf_ar], axis=0)
        mask = make_attn_mask(input_mask, ar)
        positions = jnp.cumsum(input_mask, axis=1) - 1
        (prefix_out, suffix_out), _, cap, *_ = gemma.transformer(
            params["PaliGemma"]["llm"], [pre, suf], positions, mask, configs=self.experts, dtype=self.dtype,
            adarms_cond=[None, cond], capture=capture, edit=edit, remat=remat)
        v_t = linear(params["action_out_proj"], suffix_out[:, -cfg.action_horizon:])
        return v_t, prefix_out, pre_mask, cap

    def compute_loss(self, params: dict, obs: Observation, actions: jax.Array, rng: jax.Array, *,
                     remat: bool = False, return_prefix: bool = False):
        """openpi's flow-matching loss (traceable; no augmentation): float32 [B, H_a].

        Noise ~ N(0, 1), t ~ Beta(1.5, 1)·0.999 + 0.001, x_t = t·noise + (1−t)·actions, target
        u_t = noise − actions, loss = mean over action_dim of (v_t − u_t)².

        ``return_prefix=True`` returns ``(loss, prefix_out [B, P, D0], prefix_mask [B, P])`` for
        auxiliary training heads on the prefix (same single pass).
        """
        noise_rng, time_rng = jax.random.split(rng)
        actions = jnp.asarray(actions, jnp.float32)
        noise = jax.random.normal(noise_rng, actions.shape)
        time = jax.random.beta(time_rng, 1.5, 1, actions.shape[:-2]) * 0.999 + 0.001
        te = time[..., None, None]
        x_t = te * noise + (1 - te) * actions
        v_t, prefix_out, prefix_mask, _ = self.forward_outputs(params, self.obs_arrays(obs), x_t, time, remat=remat)
        loss = jnp.mean(jnp.square(v_t - (noise - actions)), axis=-1)
        return (loss, prefix_out, prefix_mask) if return_prefix else loss

    def forward(self, params: dict, obs: Observation, noisy_actions, time, *,
                capture: CaptureConfig | None = None, knockouts=None, empty_rows: str = "keep_self"):
        """The training-style joint pass over prefix + suffix at flow time ``time``.

        Args:
          noisy_actions: float32 [B, H_a, action_dim] (x_t).
          time: float or float32 [B].
          capture: record the FULL pass (``CaptureConfig.full``), or None.
          knockouts: Knockout(s) to apply (see :mod:`flowlens.model.knockout`).

        Returns:
          (v_t float32 [B, H_a, action_dim] as numpy, Capture with one PassKind.FULL pass or None).
        """
        self.check(obs)
        if capture is not None and capture.residual:
            raise FlowlensError(
                "CaptureConfig(residual=True) is recorded by sample_actions (the prefix pass and each denoising "
                "step); forward's joint pass mixes the two experts' widths. Use flowlens.model.sample_actions.")
        cfg = self.config
        b = obs.batch_size
        time = jnp.broadcast_to(jnp.asarray(time, jnp.float32), (b,))
        want = capture is not None and capture.full
        bi = capture.batch_index if capture is not None else 0
        layout = self.layout(obs, bi) if (want or knockouts) else None
        lcap = rows = None
        if want:
            layers = capture.resolve_layers(cfg.num_layers)
            rows = capture.resolve_rows(layout)
            if rows.size:
                lcap = gemma.LayerCapture(layers, tuple(int(r) for r in rows), bi, capture.heads)
        plan = resolve_plan(cfg, knockouts, layout, empty_rows)
        if plan is not None and plan.timed:
            raise FlowlensError(
                "knockouts: Knockout.steps selects passes of sample_actions; forward runs one full pass. Drop "
                "steps= (None: the knockout applies to the full pass).")
        edit = edit_for(plan, 0, layout.n, layout.n) if plan is not None else None
        key = ("forward", lcap, edit is not None)
        if key not in self._jitted:
            self._jitted[key] = jax.jit(functools.partial(self.forward_arrays, capture=lcap))
        x_t = jnp.asarray(noisy_actions, jnp.float32)
        v_t, cap = self._jitted[key](params, self.obs_arrays(obs), x_t, time,
                                     edit=edit)
        v_t = np.asarray(v_t)
        if capture is None:
            return v_t, None
        passes = ()
        if lcap is not None:
            passes = (AttentionPass(PassKind.FULL, np.asarray(cap), lcap.layers, rows, time=float(time[bi]),
                                    head_reduction=capture.heads),)
        meta = {"batch_index": bi, "dtype": cfg.dtype}
        if plan is not None:
            meta.update(knockouts=list(plan.description), knockout_emptied_rows=plan.emptied_rows)
        return v_t, Capture(layout=layout, num_layers=cfg.num_layers, num_heads=cfg.num_heads, passes=passes,
                            actions=None, model=cfg.name, metadata=meta)
