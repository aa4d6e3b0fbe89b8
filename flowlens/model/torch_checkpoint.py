"""PyTorch-layout checkpoints (openpi's converter, LeRobot ``pi0`` / ``pi05``): read and write.

Two kinds of folder hold a ``model.safetensors``:

* **openpi-pytorch** (``examples/convert_jax_model_to_pytorch.py``): tensor names as in
  :mod:`flowlens.model.torch_layout`, a ``config.json`` with ``action_dim``, ``action_horizon``,
  ``paligemma_variant``, ``action_expert_variant``, ``precision``, and openpi's ``assets/``;
* **lerobot** (``lerobot/pi0``, ``lerobot/pi05_base``): the same names under ``model.``, the full
  policy config in ``config.json`` (``type``, ``chunk_size``, ``tokenizer_max_length``, ...), and
  normalisation in ``policy_preprocessor_step_<k>_normalizer_processor.safetensors``
  (``observation.state.mean``, ``action.q01``, ...).

The architecture comes from the tensor shapes (Pi0.5 iff the action expert's norms have adaRMS
``dense`` weights, never from the folder name); head counts, which the shapes of fused
projections do not fix, come from the ``config=`` given, the variant names of ``config.json``,
flowlens' own header metadata, or openpi's conventions (one key/value head; SigLIP heads of
64-72 dims). The weights are copied out of the memory-mapped file one tensor at a time.

Example::

    params, config, stats = read_torch_checkpoint("pi05_base_pytorch/")
    save_torch_checkpoint(params, config, "out/", layout="lerobot")
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from flowlens.errors import FlowlensError
from flowlens.model.config import GEMMA_2B, GEMMA_300M, GEMMA_DUMMY, GemmaConfig, Pi0Config, SiglipConfig, get_config
from flowlens.model.norm_stats import NormStats, find_norm_stats, load_norm_stats, save_norm_stats
from flowlens.model.param_tree import (
    _as_dtype,
    config_from_architecture,
    expected_param_shapes,
    flatten_params,
    listing,
    shape_problems,
)
from flowlens.model.safetensors_io import SafetensorsFile, write_safetensors_streamed
from flowlens.model.torch_layout import (
    EXPERT, LANGUAGE, PROJECTOR, TIED_EMBEDDING, UNUSED_PREFIXES, VISION, canonical_name, from_torch_array,
    torch_rules, torch_shape, torch_tensors,
)

WEIGHTS_FILE = "model.safetensors"
LEROBOT_PREFIX = "model."
_VARIANTS = {"gemma_2b": GEMMA_2B, "gemma_300m": GEMMA_300M, "dummy": GEMMA_DUMMY,
             "gemma_2b_lora": GEMMA_2B, "gemma_300m_lora": GEMMA_300M}
_SIGLIP_HEADS = {384: 6, 768: 12, 1024: 16, 1152: 16}  # S, B, L, So400m


def weights_file(path: str | os.PathLike) -> pathlib.Path | None:
    """The ``model.safetensors`` of a folder (or the file itself), or None if there is none."""
    p = pathlib.Path(path).expanduser()
    if p.is_file() and p.suffix == ".safetensors":
        return p
    return p / WEIGHTS_FILE if (p / WEIGHTS_FILE).is_file() else None


def _config_json(root: pathlib.Path) -> dict:
    f = root / "config.json"
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FlowlensError(f"{f} is not valid JSON ({e}); fix or remove it.") from None
    return data if isinstance(data, dict) else {}


def checkpoint_kind(st: SafetensorsFile, cfg_json: Mapping) -> str:
    """"lerobot" (names under ``model.`` or a LeRobot policy config) or "openpi-pytorch"."""
    if cfg_json.get("type") in ("pi0", "pi05") or any(k.startswith(LEROBOT_PREFIX + "paligemma") for k in st.keys()):
        return "lerobot"
    return "openpi-pytorch"


def _counted(names: set[str], stem: str, tail: str) -> int:
    pat = re.compile(re.escape(stem) + r"(\d+)\." + re.escape(tail) + "$")
    return len({int(m.group(1)) for n in names if (m := pat.match(n))})


def _heads_hint(hint: Pi0Config | None, cfg_json: Mapping, meta: Mapping[str, str]) -> dict[str, int]:
    if hint is not None:
        g = hint.paligemma
        return {"num_heads": g.num_heads, "num_kv_heads": g.num_kv_heads, "head_dim": g.head_dim,
                "siglip_heads": hint.siglip.num_heads}
    if "flowlens.heads" in meta:
        return {k: int(v) for k, v in json.loads(meta["flowlens.heads"]).items()}
    g = _VARIANTS.get(str(cfg_json.get("paligemma_variant")))
    return {} if g is None else {"num_heads": g.num_heads, "num_kv_heads": g.num_kv_heads, "head_dim": g.head_dim}


def infer_torch_architecture(shapes: Mapping[str, tuple[int, ...]], heads: Mapping[str, int], where: str) -> dict:
    """Pi0Config's shape-determined fields from canonical PyTorch names → shapes (see module doc)."""
    names = set(shapes)

    def need(name: str, ndim: int) -> tuple[int, ...]:
        if name not in shapes or len(shapes[name]) != ndim:
            found = shapes.get(name, "nothing")
            raise FlowlensError(
                f"{where}: cannot infer the architecture, {name!r} should be a {ndim}-axis tensor, found {found}. "
                "Is this a Pi0 / Pi0.5 checkpoint (openpi PyTorch or LeRobot)?"
            )
        return shapes[name]

    emb = LANGUAGE + "embed_tokens.weight"
    vocab, d0 = need(emb if emb in shapes else TIED_EMBEDDING, 2)
    depth0 = _counted(names, LANGUAGE + "layers.", "self_attn.q_proj.weight")
    depth1 = _counted(names, EXPERT + "layers.", "self_attn.q_proj.weight")
    q0 = need(LANGUAGE + "layers.0.self_attn.q_proj.weight", 2)[0]
    k0 = need(LANGUAGE + "layers.0.self_attn.k_proj.weight", 2)[0]
    kv = heads.get("num_kv_heads", 1)
    h = heads.get("head_dim", k0 // kv)
    n = heads.get("num_heads", q0 // h)
    f0 = need(LANGUAGE + "layers.0.mlp.gate_proj.weight", 2)[0]
    f1, d1 = need(EXPERT + "layers.0.mlp.gate_proj.weight", 2)
    width, c, p, _ = need(VISION + "embeddings.patch_embedding.weight", 4)
    npatch = need(VISION + "embeddings.position_embedding.weight", 2)[0]
    sdepth = _counted(names, VISION + "encoder.layers.", "self_attn.q_proj.weight")
    smlp = need(VISION + "encoder.layers.0.mlp.fc1.weight", 2)[0]
    sheads = heads.get("siglip_heads") or _SIGLIP_HEADS.get(width) or width // 64
    grid = int(round(npatch**0.5))
    if n * h != q0 or kv * h != k0 or grid * grid != npatch or c != 3 or width % sheads:
        raise FlowlensError(
            f"{where}: the shapes do not fit a Pi0 model with {n} heads of {h} dims / {kv} key-value heads and "
            f"SigLIP {sheads} heads (q_proj {q0} rows, k_proj {k0}, {npatch} patches, {c} channels). Pass "
            "config= (a registry name or Pi0Config) with the right head counts."
        )
    return {
        "paligemma": GemmaConfig(width=d0, depth=depth0, mlp_dim=f0, num_heads=n, num_kv_heads=kv, head_dim=h),
        "action_expert": GemmaConfig(width=d1, depth=depth1, mlp_dim=f1, num_heads=n, num_kv_heads=kv, head_dim=h),
        "siglip": SiglipConfig(width=width, depth=sdepth, mlp_dim=smlp, num_heads=sheads, patch_size=p,
                               image_size=grid * p, out_dim=need(PROJECTOR + "weight", 2)[0]),
        "pi05": EXPERT + "layers.0.input_layernorm.dense.weight" in names,
        "action_dim": need("action_in_proj.weight", 2)[1],
        "vocab_size": vocab,
    }


def _json_overrides(kind: str, cfg_json: Mapping) -> dict[str, Any]:
    """Non-shape Pi0Config fields a config.json states (openpi: action_horizon; LeRobot: more)."""
    names = {"action_horizon": "action_horizon"} if kind == "openpi-pytorch" else {
        "chunk_size": "action_horizon", "tokenizer_max_length": "max_token_len", "num_inference_steps": "num_steps"}
    return {field: int(cfg_json[k]) for k, field in names.items() if isinstance(cfg_json.get(k), int)}


def _lerobot_stats(root: pathlib.Path) -> dict[str, NormStats] | None:
    files = sorted(root.glob("policy_preprocessor_step_*_normalizer_processor.safetensors"))
    if not files:
        return None
    with SafetensorsFile(files[0]) as st:
        out = {}
        for src, dst in (("observation.state", "state"), ("action", "actions")):
            got = {s: np.array(st.get(f"{src}.{s}"), np.float64) for s in ("mean", "std", "q01", "q99")
                   if f"{src}.{s}" in st}
            if "mean" in got and "std" in got:
                out[dst] = NormStats(**got)
    return out or None


def read_torch_checkpoint(
    path: str | os.PathLike, config: str | Pi0Config | None = None, *, param_dtype: Any = None,
    asset_id: str | None = None, **overrides: Any
) -> tuple[dict[str, np.ndarray], Pi0Config, dict[str, NormStats] | None, str]:
    """Read a PyTorch-layout checkpoint into openpi's flat parameter dict.

    Args:
      path: the folder holding ``model.safetensors`` (or the file).
      config: registry name / Pi0Config for non-shape settings and head counts (None: inferred).
      param_dtype: numpy dtype for the parameters (None: as stored).
      asset_id: which ``assets/<asset_id>/norm_stats.json`` to read (None: the only one).
      **overrides: Pi0Config fields (win over config.json's).

    Returns:
      (flat params ``"PaliGemma/llm/..." → array`` in openpi shapes, config, norm stats or None,
      kind "openpi-pytorch" / "lerobot").

    Raises:
      FlowlensError: naming the kind recognised and the missing / mis-shaped tensors.
    """
    file = weights_file(path)
    if file is None:
        raise FlowlensError(f"{str(path)!r} holds no {WEIGHTS_FILE}; pass a PyTorch (openpi / LeRobot) checkpoint.")
    root = file.parent
    cfg_json = _config_json(root)
    hint = get_config(config) if config is not None else None
    np_dtype = _as_dtype(param_dtype)
    with SafetensorsFile(file) as st:
        kind = checkpoint_kind(st, cfg_json)
        prefix = LEROBOT_PREFIX if kind == "lerobot" else ""
        where = f"{file} ({kind} layout)"
        names = {canonical_name(k, prefix): k for k in st.keys()}
        if LANGUAGE + "embed_tokens.weight" not in names and TIED_EMBEDDING in names:
            names[LANGUAGE + "embed_tokens.weight"] = names[TIED_EMBEDDING]
        shapes = {k: st.shape(v) for k, v in names.items()}
        arch = infer_torch_architecture(shapes, _heads_hint(hint, cfg_json, st.metadata), where)
        cfg = config_from_architecture(arch, hint, **{**_json_overrides(kind, cfg_json), **overrides})
        expected = expected_param_shapes(cfg)
        rules = torch_rules(cfg)
        want = {prefix + r.torch: torch_shape(r.kind, expected[r.key][len(r.index):]) for r in rules}
        problems = shape_problems(want, {prefix + k: shapes[k] for k in names})
        if problems:
            raise FlowlensError(
                f"{where}: recognised a {cfg.variant} checkpoint, but {len(problems)} tensors do not fit it:"
                f"{listing(problems)}\nFix: pass the config it was trained with (config=), or re-export the checkpoint."
            )
        used = {r.torch for r in rules} | {TIED_EMBEDDING}
        extra = [k for k in names if k not in used and not k.startswith(UNUSED_PREFIXES)]
        if extra:
            raise FlowlensError(f"{where}: tensors the {cfg.variant} model does not have: {sorted(extra)[:8]}.")
        out: dict[str, np.ndarray] = {}
        for r in rules:
            if r.key not in out:
                first = st.dtype(names[r.torch])
                out[r.key] = np.empty(expected[r.key], np_dtype or first)
            t = st.get(names[r.torch])
            out[r.key][r.index] = from_torch_array(r.kind, t, expected[r.key][len(r.index):])
            del t
            st.release(names[r.torch])
    stats = _lerobot_stats(root) if kind == "lerobot" else None
    if stats is None and (f := find_norm_stats(root, asset_id)) is not None:
        stats = load_norm_stats(f)
    return out, cfg, stats, kind


def save_torch_checkpoint(
    params: Mapping,
    config: Pi0Config,
    directory: str | os.PathLike,
    *,
    layout: str = "openpi",
    norm_stats: Mapping[str, NormStats] | None = None,
    asset_id: str = "flowlens",
) -> pathlib.Path:
    """Write an openpi parameter tree as ``<directory>/model.safetensors`` + ``config.json``.

    ``layout="openpi"``: openpi's converter layout (norm stats to ``assets/<asset_id>/``);
    ``"lerobot"``: names under ``model.`` and a LeRobot-style ``config.json`` (``type``,
    ``chunk_size``, ...). Arrays keep their dtype. Head counts go into the header metadata.

    Returns:
      ``directory``.
    """
    if layout not in ("openpi", "lerobot"):
        raise FlowlensError(f"layout must be 'openpi' or 'lerobot', got {layout!r}.")
    root = pathlib.Path(directory).expanduser()
    flat = {k: np.asarray(v) for k, v in flatten_params(params).items()}
    specs, produce = torch_tensors(flat, config, prefix=LEROBOT_PREFIX if layout == "lerobot" else "")
    heads = {"num_heads": config.paligemma.num_heads, "num_kv_heads": config.paligemma.num_kv_heads,
             "head_dim": config.paligemma.head_dim, "siglip_heads": config.siglip.num_heads}
    write_safetensors_streamed(root / WEIGHTS_FILE, specs, produce,
                               metadata={"format": "pt", "flowlens.heads": json.dumps(heads)})
    dtype = str(specs[0][2])
    if layout == "openpi":
        cfg_json = {"action_dim": config.action_dim, "action_horizon": config.action_horizon,
                    "paligemma_variant": "custom", "action_expert_variant": "custom", "precision": dtype}
    else:
        cfg_json = {"type": config.variant, "chunk_size": config.action_horizon,
                    "n_action_steps": config.action_horizon,
                    "max_state_dim": config.action_dim, "max_action_dim": config.action_dim,
                    "tokenizer_max_length": config.max_token_len, "num_inference_steps": config.num_steps}
    (root / "config.json").write_text(json.dumps(cfg_json, indent=2))
    if norm_stats is not None:
        save_norm_stats(norm_stats, root / "assets" / asset_id)
    return root


__all__ = ["checkpoint_kind", "infer_torch_architecture", "read_torch_checkpoint", "save_torch_checkpoint",
           "weights_file"]
