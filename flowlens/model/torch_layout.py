"""The PyTorch layout of Pi0 / Pi0.5 weights (openpi's PyTorch port, LeRobot) ↔ openpi's tree.

openpi's PyTorch model (``PI0Pytorch``) and LeRobot's ``pi0`` / ``pi05`` policies name their
weights after Hugging Face's PaliGemma / Gemma / SigLIP modules, one tensor per layer, with
``nn.Linear`` weights stored ``[out, in]``; openpi's Flax tree stacks the layers on a leading
axis and stores kernels ``[in, out]`` (or einsum-shaped ``[heads, in, head_dim]``). LeRobot adds
a ``model.`` prefix. One :class:`Rule` per PyTorch tensor says which slice of which openpi
array it is and how it is laid out (the ``kind``):

=========  ======================================  ==========================================
kind       openpi slice ``s`` (shape ``S``)         PyTorch tensor
=========  ======================================  ==========================================
``id``     any                                      ``s``
``T``      ``[in, out]``                            ``s.T``
``heads``  ``[N, D, H]`` (q / k / v einsum)         ``s.transpose(0, 2, 1).reshape(N*H, D)``
``in_T``   ``[D, N, H]`` (SigLIP q / k / v)         ``s.reshape(D, N*H).T``
``out_T``  ``[N, H, D]`` (attention output)         ``s.reshape(N*H, D).T``
``flat``   ``[N, H]`` (SigLIP q / k / v bias)       ``s.reshape(-1)``
``pos``    ``[1, P, W]`` (SigLIP positions)         ``s.reshape(P, W)``
``patch``  ``[p, p, 3, W]`` (patch embedding)       ``s.transpose(3, 2, 0, 1)``
=========  ======================================  ==========================================

The table is written from the layouts' documented shapes (fact sheet §2 of
attribution_and_ecosystem.md), general in every size (no reshape relies on N·H = D).

Example::

    rules = torch_rules(get_config("pi05"))
    len(rules)                     # one per PyTorch tensor
    specs, produce = torch_tensors(flat_params, config)   # [("action_in_proj.weight", (1024, 32), f32), ...]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from flowlens.errors import FlowlensError
from flowlens.model.config import Pi0Config

PWE = "paligemma_with_expert."
VISION = PWE + "paligemma.model.vision_tower.vision_model."
PROJECTOR = PWE + "paligemma.model.multi_modal_projector.linear."
LANGUAGE = PWE + "paligemma.model.language_model."
EXPERT = PWE + "gemma_expert.model."
# Older transformers releases (LeRobot's first pi0) name the PaliGemma submodules differently;
# PyTorch names are rewritten to the names above before lookup.
ALIASES = (
    (PWE + "paligemma.language_model.model.", LANGUAGE),
    (PWE + "paligemma.language_model.lm_head.", PWE + "paligemma.lm_head."),
    (PWE + "paligemma.vision_tower.", PWE + "paligemma.model.vision_tower."),
    (PWE + "paligemma.multi_modal_projector.", PWE + "paligemma.model.multi_modal_projector."),
)
# The language model's output head is tied to the token embedding: a file may hold either name.
TIED_EMBEDDING = PWE + "paligemma.lm_head.weight"
# Tensors of the PyTorch modules that openpi's tree has no counterpart for (ignored on read).
UNUSED_PREFIXES = (PWE + "gemma_expert.lm_head.", PWE + "paligemma.lm_head.")


@dataclasses.dataclass(frozen=True)
class Rule:
    """One PyTorch tensor = ``kind``-transform of ``openpi[key][index]``."""

    torch: str
    key: str
    index: tuple[int, ...]
    kind: str


def _slice_shape(shape: tuple[int, ...], index: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[len(index):])


def torch_shape(kind: str, s: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape of an openpi slice of shape ``s`` under ``kind``."""
    n = int(np.prod(s))
    return {
        "id": s,
        "T": s[::-1],
        "heads": (n // s[1], s[1]) if len(s) == 3 else (),
        "in_T": (n // s[0], s[0]),
        "out_T": (s[-1], n // s[-1]),
        "flat": (n,),
        "pos": (n // s[-1], s[-1]),
        "patch": (s[3], s[2], s[0], s[1]) if len(s) == 4 else (),
    }[kind]


def to_torch_array(kind: str, s: np.ndarray) -> np.ndarray:
    """openpi slice → PyTorch tensor (a view where numpy allows)."""
    if kind == "id":
        return s
    if kind == "T":
        return s.T
    if kind == "heads":
        return s.transpose(0, 2, 1).reshape(-1, s.shape[1])
    if kind == "in_T":
        return s.reshape(s.shape[0], -1).T
    if kind == "out_T":
        return s.reshape(-1, s.shape[-1]).T
    if kind == "flat":
        return s.reshape(-1)
    if kind == "pos":
        return s.reshape(-1, s.shape[-1])
    if kind == "patch":
        return s.transpose(3, 2, 0, 1)
    raise ValueError(kind)


def from_torch_array(kind: str, t: np.ndarray, s: tuple[int, ...]) -> np.ndarray:
    """PyTorch tensor → openpi slice of shape ``s`` (inverse of :func:`to_torch_array`)."""
    if kind == "T":
        return t.T
    if kind == "heads":
        return t.reshape(s[0], s[2], s[1]).transpose(0, 2, 1)
    if kind in ("in_T", "out_T"):
        return t.T.reshape(s)
    if kind == "patch":
        return t.transpose(2, 3, 1, 0)
    return t.reshape(s)  # id, flat, pos


def _linear(rules: list[Rule], torch: str, key: str, index: tuple[int, ...] = ()) -> None:
    rules.append(Rule(torch + "weight", key + "/kernel", index, "T"))
    rules.append(Rule(torch + "bias", key + "/bias", index, "id"))


def _gemma_rules(rules: list[Rule], torch: str, sfx: str, depth: int, adarms: bool) -> None:
    llm = "PaliGemma/llm/"
    for i in range(depth):
        t = f"{torch}layers.{i}."
        rules.append(Rule(t + "self_attn.q_proj.weight", f"{llm}layers/attn/q_einsum{sfx}/w", (i,), "heads"))
        rules.append(Rule(t + "self_attn.k_proj.weight", f"{llm}layers/attn/kv_einsum{sfx}/w", (i, 0), "heads"))
        rules.append(Rule(t + "self_attn.v_proj.weight", f"{llm}layers/attn/kv_einsum{sfx}/w", (i, 1), "heads"))
        rules.append(Rule(t + "self_attn.o_proj.weight", f"{llm}layers/attn/attn_vec_einsum{sfx}/w", (i,), "out_T"))
        rules.append(Rule(t + "mlp.gate_proj.weight", f"{llm}layers/mlp{sfx}/gating_einsum", (i, 0), "T"))
        rules.append(Rule(t + "mlp.up_proj.weight", f"{llm}layers/mlp{sfx}/gating_einsum", (i, 1), "T"))
        rules.append(Rule(t + "mlp.down_proj.weight", f"{llm}layers/mlp{sfx}/linear", (i,), "T"))
        for norm, name in (("pre_attention_norm", "input_layernorm"), ("pre_ffw_norm", "post_attention_layernorm")):
            if adarms:
                _linear(rules, f"{t}{name}.dense.", f"{llm}layers/{norm}{sfx}/Dense_0", (i,))
            else:
                rules.append(Rule(f"{t}{name}.weight", f"{llm}layers/{norm}{sfx}/scale", (i,), "id"))
    if adarms:
        _linear(rules, f"{torch}norm.dense.", f"{llm}final_norm{sfx}/Dense_0")
    else:
        rules.append(Rule(f"{torch}norm.weight", f"{llm}final_norm{sfx}/scale", (), "id"))


def torch_rules(config: Pi0Config) -> list[Rule]:
    """Every tensor of ``config``'s model in the PyTorch layout, as a :class:`Rule` (no prefix)."""
    rules: list[Rule] = []
    img = "PaliGemma/img/"
    rules.append(Rule(VISION + "embeddings.patch_embedding.weight", img + "embedding/kernel", (), "patch"))
    rules.append(Rule(VISION + "embeddings.patch_embedding.bias", img + "embedding/bias", (), "id"))
    rules.append(Rule(VISION + "embeddings.position_embedding.weight", img + "pos_embedding", (), "pos"))
    enc = img + "Transformer/encoderblock/"
    for i in range(config.siglip.depth):
        t = f"{VISION}encoder.layers.{i}."
        for ln, name in (("LayerNorm_0", "layer_norm1"), ("LayerNorm_1", "layer_norm2")):
            rules.append(Rule(f"{t}{name}.weight", f"{enc}{ln}/scale", (i,), "id"))
            rules.append(Rule(f"{t}{name}.bias", f"{enc}{ln}/bias", (i,), "id"))
        _linear(rules, f"{t}mlp.fc1.", f"{enc}MlpBlock_0/Dense_0", (i,))
        _linear(rules, f"{t}mlp.fc2.", f"{enc}MlpBlock_0/Dense_1", (i,))
        mha = enc + "MultiHeadDotProductAttention_0/"
        for jax_name, name in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            rules.append(Rule(f"{t}self_attn.{name}.weight", f"{mha}{jax_name}/kernel", (i,), "in_T"))
            rules.append(Rule(f"{t}self_attn.{name}.bias", f"{mha}{jax_name}/bias", (i,), "flat"))
        rules.append(Rule(f"{t}self_attn.out_proj.weight", f"{mha}out/kernel", (i,), "out_T"))
        rules.append(Rule(f"{t}self_attn.out_proj.bias", f"{mha}out/bias", (i,), "id"))
    rules.append(Rule(VISION + "post_layernorm.weight", img + "Transformer/encoder_norm/scale", (), "id"))
    rules.append(Rule(VISION + "post_layernorm.bias", img + "Transformer/encoder_norm/bias", (), "id"))
    _linear(rules, PROJECTOR, img + "head")
    rules.append(Rule(LANGUAGE + "embed_tokens.weight", "PaliGemma/llm/embedder/input_embedding", (), "id"))
    _gemma_rules(rules, LANGUAGE, "", config.paligemma.depth, adarms=False)
    _gemma_rules(rules, EXPERT, "_1", config.action_expert.depth, adarms=config.pi05)
    heads = ("action_in_proj", "action_out_proj")
    heads += ("time_mlp_in", "time_mlp_out") if config.pi05 else ("state_proj", "action_time_mlp_in",
                                                                    "action_time_mlp_out")
    for name in heads:
        _linear(rules, name + ".", name)
    return rules


def canonical_name(name: str, prefix: str = "") -> str:
    """A PyTorch tensor name without ``prefix`` (LeRobot's ``model.``), older aliases rewritten."""
    if prefix and name.startswith(prefix):
        name = name[len(prefix):]
    for old, new in ALIASES:
        if name.startswith(old):
            return new + name[len(old):]
    return name


def torch_tensors(params: Mapping[str, np.ndarray], config: Pi0Config, *, prefix: str = ""):
    """The PyTorch tensors of openpi flat params (``"a/b/c" → array``), made one at a time.

    Returns:
      ``(specs, produce)``: ``[(prefix + torch name, shape, dtype)]`` in rule order, and
      ``produce(name)`` → that tensor as a contiguous array in the parameter's dtype.

    Raises:
      FlowlensError: a parameter the layout needs is missing (named).
    """
    rules = torch_rules(config)
    missing = sorted({r.key for r in rules if r.key not in params})
    if missing:
        raise FlowlensError(
            f"cannot export to the PyTorch layout: the parameters lack {missing[:8]} (config "
            f"{config.name!r}, {config.variant}). Pass the params the config describes."
        )
    by_name = {prefix + r.torch: r for r in rules}
    specs = [(name, torch_shape(r.kind, tuple(np.shape(params[r.key]))[len(r.index):]), np.asarray(params[r.key]).dtype)
             for name, r in by_name.items()]

    def produce(name: str) -> np.ndarray:
        r = by_name[name]
        return np.ascontiguousarray(to_torch_array(r.kind, np.asarray(params[r.key])[r.index]))

    return specs, produce


__all__ = [
    "ALIASES", "EXPERT", "LANGUAGE", "PROJECTOR", "Rule", "TIED_EMBEDDING", "UNUSED_PREFIXES", "VISION",
    "canonical_name", "from_torch_array", "to_torch_array", "torch_tensors", "torch_rules", "torch_shape",
]
