"""openpi checkpoints: read the parameter tree, infer the architecture from it, validate, write.

An openpi checkpoint directory holds ``params/`` (an orbax PyTree checkpoint, OCDBT format, whose
single item is ``{"params": tree}``) and ``assets/<asset_id>/norm_stats.json``. Released
checkpoints store the tree as a pure nested dict; checkpoints saved during openpi training come
from an ``nnx.State`` and every key path ends with ``"value"``, which is stripped (as openpi's
``restore_params`` does, fact sheet §7.1). Reading uses orbax/tensorstore: arrays and JSON /
msgpack metadata only, never pickle, so opening a checkpoint runs no code from it.

The parameter paths are openpi's (§7.2), e.g. ``PaliGemma/img/head/kernel``,
``PaliGemma/llm/layers/attn/q_einsum_1/w``, ``action_in_proj/kernel``. Everything the shapes
fix is inferred from them (:func:`infer_config`): each expert's width, depth, MLP size, query /
key-value heads and head size; SigLIP's width, depth, heads, MLP size, patch and image size;
``action_dim``; and Pi0 vs Pi0.5 (Pi0.5's action expert has adaRMS norms, ``Dense_0`` params,
instead of ``scale``). What shapes cannot tell (action horizon, prompt length, denoising steps,
compute dtype) comes from a named config or keyword overrides, with openpi's defaults (Pi0:
50 actions / 48 tokens; Pi0.5: 50 / 200; ``pi05_libero``: 10 / 200).

Example::

    ckpt = load_checkpoint("~/ckpts/pi05_libero", config="pi05_libero")   # bf16 numpy arrays
    ckpt.config.action_horizon, ckpt.norm_stats["state"].q01
    save_openpi_checkpoint(params, "/tmp/my_model")                         # <dir>/params
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import traverse_util

from flowlens.errors import FlowlensError
from flowlens.model.config import CONFIGS, GemmaConfig, Pi0Config, SiglipConfig, get_config
from flowlens.model.norm_stats import NormStats, find_norm_stats, load_norm_stats, save_norm_stats
from flowlens.model.siglip import siglip_param_shapes

# Files an orbax PyTree checkpoint directory holds (one suffices to recognise it).
_ORBAX_MARKERS = ("_METADATA", "manifest.ocdbt", "_CHECKPOINT_METADATA", "checkpoint")
# Fields of Pi0Config that the parameter shapes determine.
INFERRED_FIELDS = ("paligemma", "action_expert", "siglip", "pi05", "action_dim", "vocab_size")
_MAX_LISTED = 12


@dataclasses.dataclass(frozen=True, eq=False)
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
      params: the pure nested parameter dict (numpy arrays), openpi's paths.
      config: the architecture inferred from the shapes plus the non-shape settings.
      norm_stats: "state" / "actions" → NormStats, or None when the checkpoint has none.
      path: the checkpoint directory (the one holding ``params/`` or ``model.safetensors``).
    """

    params: dict
    config: Pi0Config
    norm_stats: dict[str, NormStats] | None
    path: pathlib.Path


# ---- paths ------------------------------------------------------------------------------------
def _is_orbax_dir(p: pathlib.Path) -> bool:
    return p.is_dir() and any((p / m).exists() for m in _ORBAX_MARKERS)


def resolve_params_dir(path: str | os.PathLike) -> pathlib.Path:
    """The orbax ``params`` directory of a checkpoint given as ``<ckpt>`` or ``<ckpt>/params``.

    A training directory with numbered step folders (``<run>/<step>/params``) resolves to the
    highest step.

    Raises:
      FlowlensError: a ``gs://`` URL, a missing directory, or one without an orbax checkpoint.
    """
    if str(path).startswith(("gs://", "s3://", "http://", "https://")):
        raise FlowlensError(
            f"checkpoint path {str(path)!r} is remote; flowlens reads local directories only. Copy it first, "
            f"e.g. `gsutil -m cp -r {path} ./`, and pass the local directory."
        )
    p = pathlib.Path(path).expanduser()
    if not p.exists():
        raise FlowlensError(
            f"checkpoint directory {str(p)!r} does not exist; expected an openpi checkpoint directory "
            "(holding params/ and assets/) or its params/ folder."
        )
    if (p / "params").is_dir():
        return p / "params"
    if _is_orbax_dir(p):
        return p
    steps = sorted((int(c.name), c) for c in p.iterdir() if c.name.isdigit() and (c / "params").is_dir())
    if steps:
        return steps[-1][1] / "params"
    found = sorted(c.name for c in p.iterdir())[:10] if p.is_dir() else []
    raise FlowlensError(
        f"{str(p)!r} is not an openpi checkpoint (JAX or PyTorch) nor a LeRobot one: expected a params/ folder "
        f"(openpi JAX: an orbax PyTree checkpoint with _METADATA / manifest.ocdbt) or a model.safetensors "
        f"(openpi PyTorch / LeRobot) in it; found {found}."
    )


def _orbax():
    try:
        import orbax.checkpoint as ocp
    except ImportError:  # pragma: no cover - depends on the environment
        raise FlowlensError(
            "reading or writing openpi JAX checkpoints needs orbax-checkpoint (a flowlens dependency that is "
            "missing from this environment); install it with `pip install orbax-checkpoint`."
        ) from None
    return ocp


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


# ---- reading ----------------------------------------------------------------------------------
def strip_value_keys(params: Mapping) -> dict:
    """Drop the trailing ``"value"`` key of every path when *all* paths end with it (nnx.State)."""
    flat = traverse_util.flatten_dict(dict(params))
    if flat and all(k[-1] == "value" for k in flat):
        flat = {k[:-1]: v for k, v in flat.items()}
    return traverse_util.unflatten_dict(flat)


def load_params(path: str | os.PathLike, *, dtype: Any = "bfloat16", check_finite: bool = True) -> dict:
    """Read the parameter tree of an openpi checkpoint as a pure nested dict of numpy arrays.

    Integrity: orbax cannot verify the array data. openpi checkpoints are zarr v2 arrays in an
    OCDBT store, which keep no checksum of the data (zarr v3's ``crc32c`` in orbax covers only
    the shard index), so a flipped byte in a data file loads without error as a slightly wrong
    weight. What can be checked is: the tree structure and shapes (``check_params``, done by
    ``load_checkpoint``), a decodable store (orbax / tensorstore errors become FlowlensErrors)
    and, with ``check_finite``, that every weight is finite. Keep your own checksum of the
    checkpoint folder (e.g. ``sha256sum -c``) to detect silent corruption.

    Args:
      path: ``<ckpt>`` or ``<ckpt>/params``.
      dtype: cast every array on read ("bfloat16" like openpi's inference, "float32"), or None
        to keep the stored dtype.
      check_finite: refuse a tree holding NaN or inf weights (one pass over the weights).

    Returns:
      The nested dict under the checkpoint's ``"params"`` item, ``"value"`` suffixes stripped.

    Raises:
      FlowlensError: missing directory, not an orbax checkpoint, no ``"params"`` item, or (with
        ``check_finite``) a parameter with NaN / inf values, named by its path.
    """
    ocp = _orbax()
    pdir = resolve_params_dir(path).resolve()
    np_dtype = _as_dtype(dtype)
    try:
        with ocp.PyTreeCheckpointer() as ckptr:
            meta = ckptr.metadata(pdir)
            tree = getattr(meta, "item_metadata", meta)
            tree = getattr(tree, "tree", tree)
            if not isinstance(tree, Mapping) or "params" not in tree:
                keys = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
                raise FlowlensError(
                    f"{pdir} holds an orbax checkpoint without a 'params' item (found {keys}); openpi saves "
                    "{'params': tree}. Use save_openpi_checkpoint to write one."
                )
            item = {"params": tree["params"]}
            import jax

            args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(restore_type=np.ndarray, dtype=np_dtype), item)
            restored = ckptr.restore(pdir, args=ocp.args.PyTreeRestore(item=item, restore_args=args))
    except FlowlensError:
        raise
    except Exception as e:  # orbax / tensorstore errors: name the directory and the cause
        raise FlowlensError(
            f"could not read the orbax checkpoint in {pdir}: {type(e).__name__}: {e}"
        ) from None
    params = strip_value_keys(restored["params"])
    if check_finite:
        for name, leaf in flatten_params(params).items():
            arr = np.asarray(leaf)
            if arr.dtype.kind in "fc" or arr.dtype.name == "bfloat16":
                flat = arr.reshape(-1)
                blocks = np.array_split(flat, -(-flat.size // 2**24) or 1)  # no full-size temporary
                bad = sum(int(b.size - np.count_nonzero(np.isfinite(b))) for b in blocks)
                if bad:
                    raise FlowlensError(
                        f"checkpoint {pdir}: parameter {name!r} holds {bad} non-finite value(s) (NaN / inf); the "
                        "checkpoint is corrupt or was saved from a diverged run. Re-download or re-export it "
                        "(load_params(..., check_finite=False) reads it anyway)."
                    )
    return params


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


# ---- the one-call loader ----------------------------------------------------------------------
def load_checkpoint(
    path: str | os.PathLike,
    config: str | Pi0Config | None = None,
    *,
    dtype: Any = None,
    asset_id: str | None = None,
    strict: bool = False,
    **overrides: Any,
) -> Checkpoint:
    """Load a Pi0 / Pi0.5 checkpoint of any of three kinds: parameters, configuration, norm stats.

    Kinds (recognised from the folder, not its name): an openpi JAX checkpoint (``params/``, orbax);
    an openpi-PyTorch one (``model.safetensors`` + ``config.json`` + ``assets/``, from openpi's
    converter); a LeRobot ``pi0`` / ``pi05`` policy (``model.safetensors`` with ``model.`` names,
    LeRobot's ``config.json`` and processor files). See :mod:`flowlens.model.torch_checkpoint`.

    Args:
      path: ``<ckpt>``, ``<ckpt>/params`` or ``<ckpt>/model.safetensors``.
      config: registry name or Pi0Config for the non-shape settings (see :func:`infer_config`);
        the architecture always comes from the shapes. None: a full-size openpi checkpoint whose
        directory name or norm-stats asset id mentions "libero" gets ``pi0_libero`` /
        ``pi05_libero`` (10 actions for Pi0.5); otherwise as :func:`infer_config`.
      dtype: the one dtype choice, "bfloat16" or "float32": parameters are cast to it on read *and*
        the model computes in it (``config.dtype``). None: the config's compute dtype for both.
      asset_id: which ``assets/<asset_id>/norm_stats.json`` to read (None: the only one).
      strict: parameters the model does not use are an error instead of a warning.
      **overrides: Pi0Config fields (action_horizon, max_token_len, num_steps...), not ``dtype``.

    Raises:
      FlowlensError: missing directory, foreign tree, mismatched shapes (first offending keys with
        expected and found shapes, and the kind of checkpoint recognised).
    """
    if "dtype" in overrides:  # pragma: no cover - Python binds dtype= to the keyword
        raise FlowlensError("pass the compute dtype as dtype=, not as a config override.")
    if dtype is not None:
        _as_dtype(dtype)
        if str(np.dtype(_as_dtype(dtype))) not in ("bfloat16", "float32"):
            raise FlowlensError(f"dtype must be 'bfloat16' or 'float32' (params and compute), got {dtype!r}.")
        overrides["dtype"] = str(np.dtype(_as_dtype(dtype)))
    from flowlens.model.torch_checkpoint import read_torch_checkpoint, weights_file

    # cast while reading when the dtype is known up front (no second copy of the weights)
    known = overrides.get("dtype") or (get_config(config).dtype if config is not None else None)
    if not str(path).startswith(("gs://", "s3://", "http://", "https://")) and weights_file(path) is not None:
        flat, cfg, stats, _ = read_torch_checkpoint(path, config, param_dtype=known, asset_id=asset_id,
                                                    **overrides)
        params = cast_params(traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()}),
                               cfg.dtype)
        root = weights_file(path).parent
        return Checkpoint(params=check_params(params, cfg, strict=strict), config=cfg, norm_stats=stats, path=root)
    pdir = resolve_params_dir(path)
    root = pdir.parent if pdir.name == "params" else pdir
    stats_file = find_norm_stats(root, asset_id)
    params = load_params(pdir, dtype=known)
    if config is None:
        config = _libero_guess(params, root, stats_file)
    cfg = infer_config(params, config, **overrides)
    params = cast_params(check_params(params, cfg, strict=strict), cfg.dtype)
    stats = load_norm_stats(stats_file) if stats_file is not None else None
    return Checkpoint(params=params, config=cfg, norm_stats=stats, path=root)


def cast_params(params: Mapping, dtype: str) -> dict:
    """Every floating array of a nested dict in ``dtype`` (arrays already in it are kept, not copied)."""
    want = _as_dtype(dtype)
    flat = traverse_util.flatten_dict(dict(params))
    return traverse_util.unflatten_dict(
        {k: np.asarray(v).astype(want, copy=False) if np.asarray(v).dtype != want else v for k, v in flat.items()}
    )


def _libero_guess(params: Mapping, root: pathlib.Path, stats_file: pathlib.Path | None) -> str | None:
    """Guess "pi0_libero" / "pi05_libero" for a full-size openpi checkpoint that names LIBERO."""
    arch = infer_architecture(params)
    variant = "pi05" if arch["pi05"] else "pi0"
    if any(getattr(CONFIGS[variant], f) != arch[f] for f in INFERRED_FIELDS):
        return None
    hints = [root.name, *(stats_file.relative_to(root).parts if stats_file is not None else ())]
    return f"{variant}_libero" if any("libero" in h.lower() for h in hints) else None


# ---- writing ----------------------------------------------------------------------------------
def save_openpi_checkpoint(
    params: Mapping,
    directory: str | os.PathLike,
    *,
    norm_stats: Mapping[str, NormStats] | None = None,
    asset_id: str = "flowlens",
    overwrite: bool = False,
) -> pathlib.Path:
    """Write ``params`` in openpi's on-disk layout: ``<directory>/params`` (orbax PyTree checkpoint
    of ``{"params": params}``) and, if given, ``<directory>/assets/<asset_id>/norm_stats.json``.

    openpi's ``restore_params`` (and :func:`load_params`) read it back. Arrays are written in their
    own dtype (convert first to ship bf16).

    Returns:
      ``directory`` (the checkpoint root).

    Raises:
      FlowlensError: ``<directory>/params`` exists and ``overwrite`` is False.
    """
    ocp = _orbax()
    import jax

    root = pathlib.Path(directory).expanduser().resolve()
    pdir = root / "params"
    if pdir.exists() and not overwrite:
        raise FlowlensError(
            f"{pdir} already exists; pass overwrite=True to replace it, or choose another directory."
        )
    flatten_params(params)  # type check with a clear message
    tree = {"params": jax.tree.map(np.asarray, dict(params))}
    root.mkdir(parents=True, exist_ok=True)
    with ocp.PyTreeCheckpointer() as ckptr:
        ckptr.save(pdir, args=ocp.args.PyTreeSave(tree), force=overwrite)
    if norm_stats is not None:
        save_norm_stats(norm_stats, root / "assets" / asset_id)
    return root


def param_count(params: Mapping) -> int:
    """Total number of parameters in a nested dict."""
    return int(sum(np.prod(_shape(v)) for v in flatten_params(params).values()))


__all__ = [
    "Checkpoint",
    "cast_params",
    "check_params",
    "config_from_architecture",
    "expected_param_shapes",
    "flatten_params",
    "infer_architecture",
    "infer_config",
    "load_checkpoint",
    "load_params",
    "model_param_shapes",
    "param_count",
    "resolve_params_dir",
    "save_openpi_checkpoint",
    "strip_value_keys",
]
