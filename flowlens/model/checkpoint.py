"""openpi checkpoints on disk: read the orbax parameter tree (or hand a safetensors one to
``torch_checkpoint``), infer the architecture (``param_tree``), validate, write.

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
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import traverse_util

from flowlens.errors import FlowlensError
from flowlens.model.config import CONFIGS, Pi0Config, get_config
from flowlens.model.norm_stats import NormStats, find_norm_stats, load_norm_stats, save_norm_stats
from flowlens.model.param_tree import (
    INFERRED_FIELDS,
    _as_dtype,
    cast_params,
    check_params,
    config_from_architecture,
    expected_param_shapes,
    flatten_params,
    infer_architecture,
    infer_config,
    model_param_shapes,
    param_count,
)

# Files an orbax PyTree checkpoint directory holds (one suffices to recognise it).
_ORBAX_MARKERS = ("_METADATA", "manifest.ocdbt", "_CHECKPOINT_METADATA", "checkpoint")


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
        if _is_orbax_dir(p / "params"):
            return p / "params"
        found = sorted(c.name for c in (p / "params").iterdir())[:10]
        raise FlowlensError(
            f"{str(p / 'params')!r} is not an orbax checkpoint: expected _METADATA / manifest.ocdbt in it "
            f"(openpi writes params/ with orbax); found {found}."
        )
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
