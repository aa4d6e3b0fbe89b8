"""The openpi parameter tree: its expected shapes, the architecture the shapes fix, checks, dtype.

Every checkpoint format flowlens reads (openpi's orbax ``params/``, openpi-PyTorch and LeRobot
safetensors) ends as this one nested dict with openpi's paths (fact sheet §7.2), e.g.
``PaliGemma/img/head/kernel``, ``PaliGemma/llm/layers/attn/q_einsum_1/w``,
``action_in_proj/kernel``. This module knows that tree and nothing about files:
:func:`expected_param_shapes` for a config, :func:`infer_architecture` / :func:`infer_config`
from the shapes (each expert's width, depth, MLP size, heads and head size; SigLIP's; action_dim;
Pi0 vs Pi0.5 from the adaRMS ``Dense_0`` params of the action expert), :func:`check_params`
(missing / mis-shaped paths listed), :func:`cast_params` and :func:`flatten_params`. The file
readers are ``flowlens.model.checkpoint`` (orbax) and ``flowlens.model.torch_checkpoint``.

Example::

    shapes = expected_param_shapes(get_config("test_tiny"))   # {"action_in_proj/kernel": (D_a, W), ...}
    infer_config(params, config="pi05_libero")                  # the Pi0Config the shapes fix
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import traverse_util

from flowlens.errors import FlowlensError
from flowlens.model.config import CONFIGS, GemmaConfig, Pi0Config, SiglipConfig, get_config
from flowlens.model.siglip import siglip_param_shapes

# Fields of Pi0Config that the parameter shapes determine.
INFERRED_FIELDS = ("paligemma", "action_expert", "siglip", "pi05", "action_dim", "vocab_size")
_MAX_LISTED = 12


def _as_dtype(dtype: Any) -> np.dtype | None:
    if dtype is None:
        return None
    import jax.numpy as jnp

    try:
        return np.dtype(jnp.dtype(dtype))
    except TypeError:
        raise FlowlensError(
            f"dtype must be 'bfloat16', 'float32' or None (as stored), got {dtype!r}."
        ) from None


# ---- expected shapes --------------------------------------------------------------------------
def _gemma_shapes(prefix: str, suffix: str, g: GemmaConfig, adarms: bool) -> dict[str, tuple[int, ...]]:
    L, N, K, H, D, F = g.depth, g.num_heads, g.num_kv_heads, g.head_dim, g.width, g.mlp_dim  # noqa: N806
    s = {
        f"{prefix}/layers/attn/q_einsum{suffix}/w": (L, N, D, H),
        f"{prefix}/layers/attn/kv_einsum{suffix}/w": (L, 2, K, D, H),
        f"{prefix}/layers/attn/attn_vec_einsum{suffix}/w": (L, N, H, D),
        f"{prefix}/layers/mlp{suffix}/gating_einsum": (L, 2, D, F),
        f"{prefix}/layers/mlp{suffix}/linear": (L, F, D),
    }
    for norm in ("pre_attention_norm", "pre_ffw_norm"):
        if adarms:
            s[f"{prefix}/layers/{norm}{suffix}/Dense_0/kernel"] = (L, D, 3 * D)
            s[f"{prefix}/layers/{norm}{suffix}/Dense_0/bias"] = (L, 3 * D)
        else:
            s[f"{prefix}/layers/{norm}{suffix}/scale"] = (L, D)
    if adarms:
        s[f"{prefix}/final_norm{suffix}/Dense_0/kernel"] = (D, 3 * D)
        s[f"{prefix}/final_norm{suffix}/Dense_0/bias"] = (3 * D,)
    else:
        s[f"{prefix}/final_norm{suffix}/scale"] = (D,)
    return s


def expected_param_shapes(config: Pi0Config) -> dict[str, tuple[int, ...]]:
    """Every parameter of ``config``'s model, ``"PaliGemma/llm/..." → shape`` (fact sheet §7.2).

    Pi0 has 50 parameter arrays, Pi0.5 51; computed from the sizes, without building the model.
    """
    d0, d1, a = config.paligemma.width, config.action_expert.width, config.action_dim
    shapes = {f"PaliGemma/img/{k}": v for k, v in siglip_param_shapes(config.siglip).items()}
    shapes["PaliGemma/llm/embedder/input_embedding"] = (config.vocab_size, d0)
    shapes.update(_gemma_shapes("PaliGemma/llm", "", config.paligemma, adarms=False))
    shapes.update(_gemma_shapes("PaliGemma/llm", "_1", config.action_expert, adarms=config.pi05))
    linear = {"action_in_proj": (a, d1), "action_out_proj": (d1, a)}
    if config.pi05:
        linear.update(time_mlp_in=(d1, d1), time_mlp_out=(d1, d1))
    else:
        linear.update(state_proj=(a, d1), action_time_mlp_in=(2 * d1, d1), action_time_mlp_out=(d1, d1))
    for name, (i, o) in linear.items():
        shapes[f"{name}/kernel"] = (i, o)
        shapes[f"{name}/bias"] = (o,)
    return shapes


def model_param_shapes(config: Pi0Config) -> dict[str, tuple[int, ...]]:
    """The parameter shapes of flowlens' Pi0 model for ``config``, from ``jax.eval_shape`` of its
    init (nothing is allocated); the table of :func:`expected_param_shapes` if the model is absent."""
    return dict(_model_param_shapes(config))


@functools.lru_cache(maxsize=16)
def _model_param_shapes(config: Pi0Config) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple(sorted(_trace_model_param_shapes(config).items()))


def _trace_model_param_shapes(config: Pi0Config) -> dict[str, tuple[int, ...]]:
    try:
        from flowlens.model.pi0 import Pi0Model
    except ImportError:  # pragma: no cover - only while the model package is incomplete
        return expected_param_shapes(config)
    return {k: _shape(v) for k, v in flatten_params(Pi0Model(config).param_shapes()).items()}


def flatten_params(params: Mapping) -> dict[str, Any]:
    """Nested dict → ``{"a/b/c": leaf}``."""
    if not isinstance(params, Mapping):
        raise FlowlensError(f"params must be a nested dict of arrays, got {type(params).__name__}.")
    return {"/".join(map(str, k)): v for k, v in traverse_util.flatten_dict(dict(params)).items()}


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in np.shape(x))


def shape_problems(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]) -> list[str]:
    """One line per name of ``expected`` that ``found`` lacks or holds in another shape."""
    return [
        f"{k}: expected {shape}, found " + ("nothing (missing)" if k not in found else str(found[k]))
        for k, shape in expected.items()
        if found.get(k) != shape
    ]


def listing(problems: list[str]) -> str:
    """The first problems, one per indented line, and how many more there are."""
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return "\n  " + "\n  ".join(problems[:_MAX_LISTED]) + more


def check_params(params: Mapping, config: Pi0Config, *, strict: bool = False) -> dict:
    """Validate ``params`` against ``config``'s expected shapes; return the params, extras dropped.

    The expected shapes are those of the model's init under ``jax.eval_shape``
    (:func:`model_param_shapes`, cached per config; nothing is allocated).

    Like openpi's ``BaseModelConfig.load``, parameters the model does not have are dropped (with
    a warning, or an error when ``strict``); missing ones and shape mismatches are errors. dtypes
    are not checked.

    Raises:
      FlowlensError: listing the first offending keys with expected and found shapes.
    """
    flat = flatten_params(params)
    expected = model_param_shapes(config)
    problems = shape_problems(dict(sorted(expected.items())), {k: _shape(v) for k, v in flat.items()})
    extra = [k for k in flat if k not in expected]
    if strict:
        problems += [
            f"{k}: expected nothing (not a parameter of this model), found {_shape(flat[k])}"
            for k in sorted(extra)
        ]
    if problems:
        raise FlowlensError(
            f"the parameters do not fit config {config.name!r} ({config.variant}; {len(expected)} expected "
            f"arrays, {len(flat)} given, {len(problems)} problems):{listing(problems)}\n"
            "Fix: pass the config the checkpoint was trained with, or config=None to infer it from the "
            "shapes (infer_config)."
        )
    if extra:
        warnings.warn(
            f"dropping {len(extra)} parameters the model does not use: {extra[:_MAX_LISTED]}", stacklevel=2
        )
        flat = {k: v for k, v in flat.items() if k in expected}
        return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
    return dict(params)


# ---- architecture inference -------------------------------------------------------------------
def _need(flat: Mapping[str, Any], key: str, ndim: int) -> tuple[int, ...]:
    if key not in flat:
        top = sorted({k.split("/")[0] for k in flat})
        raise FlowlensError(
            f"cannot infer the architecture: the parameters have no {key!r}, which every openpi Pi0 / Pi0.5 "
            f"checkpoint has (top-level keys found: {top[:10]}). Is this an openpi Pi0 / Pi0.5 checkpoint?"
        )
    shape = _shape(flat[key])
    if len(shape) != ndim:
        raise FlowlensError(
            f"cannot infer the architecture: {key!r} should have {ndim} axes, found shape {shape}."
        )
    return shape


def infer_architecture(params: Mapping) -> dict[str, Any]:
    """The shape-determined Pi0Config fields (:data:`INFERRED_FIELDS`) of a parameter tree.

    Raises:
      FlowlensError: a foreign tree, a Pi0-FAST (single-expert) or LoRA checkpoint.
    """
    flat = flatten_params(params)
    if any("lora" in k.lower() for k in flat):
        raise FlowlensError(
            "these parameters contain LoRA weights (…/lora_a, …/lora_b); flowlens runs full weights only. "
            "Merge the LoRA deltas into the base weights first."
        )
    if (
        "PaliGemma/llm/layers/attn/q_einsum/w" in flat
        and "PaliGemma/llm/layers/attn/q_einsum_1/w" not in flat
    ):
        raise FlowlensError(
            "these parameters have a single Gemma expert (no …/q_einsum_1): a Pi0-FAST checkpoint. flowlens "
            "supports Pi0 and Pi0.5 (two experts, flow matching)."
        )
    llm = "PaliGemma/llm"
    vocab, d0 = _need(flat, f"{llm}/embedder/input_embedding", 2)
    layers, n, d0q, h = _need(flat, f"{llm}/layers/attn/q_einsum/w", 4)
    k = _need(flat, f"{llm}/layers/attn/kv_einsum/w", 5)[2]
    f0 = _need(flat, f"{llm}/layers/mlp/gating_einsum", 4)[3]
    l1, n1, d1, h1 = _need(flat, f"{llm}/layers/attn/q_einsum_1/w", 4)
    k1 = _need(flat, f"{llm}/layers/attn/kv_einsum_1/w", 5)[2]
    f1 = _need(flat, f"{llm}/layers/mlp_1/gating_einsum", 4)[3]
    pi05 = any(key.startswith(f"{llm}/layers/pre_attention_norm_1/Dense_0/") for key in flat)
    img = "PaliGemma/img"
    p, p2, c, width = _need(flat, f"{img}/embedding/kernel", 4)
    _, npatch, _ = _need(flat, f"{img}/pos_embedding", 3)
    depth, _, mlp = _need(flat, f"{img}/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel", 3)
    heads = _need(flat, f"{img}/Transformer/encoderblock/MultiHeadDotProductAttention_0/query/kernel", 4)[2]
    out_dim = _need(flat, f"{img}/head/kernel", 2)[1]
    action_dim = _need(flat, "action_in_proj/kernel", 2)[0]
    grid = int(round(npatch**0.5))
    if grid * grid != npatch or p != p2 or c != 3:
        raise FlowlensError(
            f"cannot infer SigLIP's geometry: pos_embedding has {npatch} patches (need a square grid) and "
            f"the patch kernel is {(p, p2, c, width)} (need [p, p, 3, width])."
        )
    return {
        "paligemma": GemmaConfig(width=d0, depth=layers, mlp_dim=f0, num_heads=n, num_kv_heads=k, head_dim=h),
        "action_expert": GemmaConfig(
            width=d1, depth=l1, mlp_dim=f1, num_heads=n1, num_kv_heads=k1, head_dim=h1
        ),
        "siglip": SiglipConfig(
            width=width,
            depth=depth,
            mlp_dim=mlp,
            num_heads=heads,
            patch_size=p,
            image_size=grid * p,
            out_dim=out_dim,
        ),
        "pi05": pi05,
        "action_dim": action_dim,
        "vocab_size": vocab,
    }


def infer_config(params: Mapping, config: str | Pi0Config | None = None, **overrides: Any) -> Pi0Config:
    """The Pi0Config of a parameter tree: architecture from the shapes, the rest from ``config``.

    Args:
      params: the nested parameter dict (openpi paths).
      config: a registry name or Pi0Config supplying what shapes cannot tell (action_horizon,
        max_token_len, num_steps, dtype, cameras, name). None: the registry config whose
        architecture matches (``pi0`` / ``pi05`` preferred), else openpi's defaults for the variant
        (Pi0: 50 actions, 48 tokens; Pi0.5: 50, 200) with name "custom".
      **overrides: Pi0Config fields to set (not the inferred ones).

    Raises:
      FlowlensError: a foreign tree; a named config of the other variant (Pi0 vs Pi0.5); an
        override of a shape-determined field that disagrees with the shapes.
    """
    return config_from_architecture(infer_architecture(params), config, **overrides)


def config_from_architecture(
    arch: Mapping[str, Any], config: str | Pi0Config | None = None, **overrides: Any
) -> Pi0Config:
    """The Pi0Config of an inferred architecture (:data:`INFERRED_FIELDS` → value), the rest from
    ``config`` / ``overrides`` as in :func:`infer_config` (whichever layout the shapes came from)."""
    for key, value in overrides.items():
        if key in INFERRED_FIELDS and value != arch[key]:
            raise FlowlensError(
                f"{key}={value!r} contradicts the checkpoint, whose shapes give {key}={arch[key]!r}; drop "
                "the override (shape-determined fields always come from the parameters)."
            )
    variant = "pi05" if arch["pi05"] else "pi0"
    if config is not None:
        base = get_config(config)
        if base.pi05 != arch["pi05"]:
            raise FlowlensError(
                f"config {base.name!r} is {base.variant} but the checkpoint is {variant} (its action "
                f"expert {'has' if arch['pi05'] else 'has no'} adaRMS Dense_0 norms); pass a {variant} "
                "config or None."
            )
    else:
        matches = [c for c in CONFIGS.values() if all(getattr(c, f) == arch[f] for f in INFERRED_FIELDS)]
        preferred = [c for c in matches if c.name == variant]
        if preferred or matches:
            base = (preferred or matches)[0]
        else:
            base = CONFIGS[variant].replace(name="custom")
    try:
        return base.replace(**{**arch, **overrides})
    except TypeError as e:
        raise FlowlensError(f"unknown Pi0Config field in overrides {sorted(overrides)}: {e}") from None
    except FlowlensError as e:
        raise FlowlensError(f"the checkpoint's shapes give an inconsistent architecture: {e}") from None


def cast_params(params: Mapping, dtype: str) -> dict:
    """Every floating array of a nested dict in ``dtype`` (arrays already in it are kept, not copied)."""
    want = _as_dtype(dtype)
    flat = traverse_util.flatten_dict(dict(params))
    return traverse_util.unflatten_dict(
        {k: np.asarray(v).astype(want, copy=False) if np.asarray(v).dtype != want else v for k, v in flat.items()}
    )


def param_count(params: Mapping) -> int:
    """Total number of parameters in a nested dict."""
    return int(sum(np.prod(_shape(v)) for v in flatten_params(params).values()))
