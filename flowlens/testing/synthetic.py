"""Synthetic captures with the exact Pi0 / Pi0.5 LIBERO layouts and realistic masks.

For tests, benchmarks and notebooks that must run without a model. Attention is a softmax of
random logits under openpi's block-causal mask, computed the way openpi computes it (masked logits
set to -2.38e38, so a fully masked query row comes out uniform: the garbage TokenGraph removes),
with the structure real VLA attention has: sink tokens (BOS, "\\n") that grow with depth, a few
"object" patches the action tokens prefer, head-specific preferences, local image attention, and
suffix attention that drifts over denoising steps.
"""

from __future__ import annotations

import numpy as np

from flowlens.core.capture import AttentionPass, Capture, PassKind
from flowlens.core.layout import TokenLayout
from flowlens.core.openpi_layout import pi05_layout, pi0_layout, synthetic_pieces
from flowlens.core.segments import ActionSegment, ImageSegment, StateSegment, TextSegment, TokenKind
from flowlens.errors import unknown_name_error

MASK_VALUE = -2.3819763e38  # openpi's big negative logit for masked entries.
VARIANTS = ("pi0", "pi05", "toy")


def toy_layout(prompt: str = "pick the red bowl", *, masked_camera: bool = True, grid=(2, 2),
               text_len: int = 8, horizon: int = 3, state_token: bool = True) -> TokenLayout:
    """A small Pi0-shaped layout: 2 cameras of ``grid`` patches (the second masked by default),
    ``text_len`` text tokens (BOS, words, "\\n", padding), a state token and ``horizon`` actions."""
    segs = []
    size = grid[0] * grid[1]
    for i, (name, ok) in enumerate((("base_0_rgb", True), ("left_wrist_0_rgb", not masked_camera))):
        segs.append(ImageSegment(kind=TokenKind.IMAGE, name=name, start=i * size, stop=(i + 1) * size,
                                 block=0, grid=tuple(grid), patch_size=224 // grid[0], valid=ok))
    ids, pieces, valid = synthetic_pieces(prompt, text_len)
    text = TextSegment.from_pieces(start=2 * size, token_ids=ids, pieces=pieces, valid=valid)
    segs.append(text)
    pos, block = text.stop, 1
    if state_token:
        segs.append(StateSegment(kind=TokenKind.STATE, name="state", start=pos, stop=pos + 1, block=1))
        pos, block = pos + 1, 2
    segs.append(ActionSegment(kind=TokenKind.ACTION, name="actions", start=pos, stop=pos + horizon, block=block))
    return TokenLayout(segments=tuple(segs), prefix_len=text.stop, variant="pi0" if state_token else "pi05")


def masked_softmax(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """openpi's attention softmax: masked logits → -2.38e38, float32 softmax over the last axis."""
    x = np.where(mask, logits, np.float32(MASK_VALUE)).astype(np.float32)
    x -= x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


def _structured_logits(rng: np.random.Generator, layout: TokenLayout, rows: np.ndarray, num_layers: int,
                       num_heads: int, *, sharpness: float, object_patches: np.ndarray,
                       step_drift: float = 0.0) -> np.ndarray:
    """Logits [layer, head, query(rows), key(all n)] with sinks, object patches and head roles."""
    n = layout.n
    q = rows.size
    logits = rng.standard_normal((num_layers, num_heads, q, n), dtype=np.float32) * np.float32(sharpness)
    groups = layout.groups()
    depth = np.linspace(0.0, 1.0, num_layers, dtype=np.float32)[:, None, None, None]
    for sink in ("bos", "newline"):
        if sink in groups:
            logits[..., groups[sink]] += np.float32(1.5) + np.float32(4.0) * depth
    kinds = layout.kinds[rows]
    is_suffix_q = (kinds == "action") | (kinds == "state")
    if object_patches.size:
        boost = np.zeros((1, num_heads, q, 1), dtype=np.float32)
        boost[0, : num_heads // 2, is_suffix_q, 0] = 3.0 + step_drift
        logits[..., object_patches] += boost
    if "words" in groups:
        text_heads = slice(num_heads // 2, num_heads)
        logits[:, text_heads, :, groups["words"]] += np.float32(1.0)
    logits += _image_locality(layout, rows)[None, None]
    return logits


def _image_locality(layout: TokenLayout, rows: np.ndarray) -> np.ndarray:
    """float32 [query, key] bias: image patches prefer their 8 neighbours (as ViT features do)."""
    bias = np.zeros((rows.size, layout.n), dtype=np.float32)
    for cam in layout.cameras:
        q_in = (rows >= cam.start) & (rows < cam.stop)
        if not q_in.any():
            continue
        qr, qc = np.divmod(rows[q_in] - cam.start, cam.grid[1])
        kr, kc = np.divmod(np.arange(cam.size), cam.grid[1])
        near = (np.abs(qr[:, None] - kr[None]) <= 1) & (np.abs(qc[:, None] - kc[None]) <= 1)
        bias[np.ix_(np.flatnonzero(q_in), cam.indices)] = np.where(near, np.float32(2.5), np.float32(0.0))
    return bias


def synthetic_capture(
    variant: str = "pi0",
    *,
    seed: int = 0,
    num_layers: int = 18,
    num_heads: int = 8,
    num_steps: int = 10,
    prompt: str = "pick up the black bowl and place it on the plate",
    sharpness: float = 1.0,
    layout: TokenLayout | None = None,
    head_reduction: str | None = None,
) -> Capture:
    """A Capture with openpi's layout, masks and pass structure, filled with structured random attention.

    Args:
      variant: "pi0" (n = 867: 3×256 patches with the third camera masked, 48 text tokens, state,
        50 actions), "pi05" (n = 978: 200 text tokens, no state, 10 actions) or "toy" (n = 20).
      seed: seeds every random draw.
      num_layers, num_heads, num_steps: model depth, query heads, denoising steps.
      sharpness: std of the random logits (higher = more peaked attention).
      layout: use this layout instead of the variant's.
      head_reduction: None (all heads) or "mean" (store the fused head only, to save memory).
    Returns:
      Capture whose prefix pass has all prefix rows and whose suffix passes have all suffix rows.
    """
    if layout is None:
        makers = {"pi0": lambda: pi0_layout(prompt), "pi05": lambda: pi05_layout(prompt),
                  "toy": lambda: toy_layout()}
        if variant not in makers:
            raise unknown_name_error("variant", variant, VARIANTS)
        layout = makers[variant]()
    rng = np.random.default_rng(seed)
    mask = layout.attention_mask()
    p_len, n = layout.prefix_len, layout.n
    cam = layout.cameras[0]
    object_patches = cam.start + rng.choice(cam.size, size=max(1, cam.size // 64), replace=False)
    layers = tuple(range(num_layers))

    def reduce(probs):
        return probs.mean(axis=1, keepdims=True) if head_reduction == "mean" else probs

    prefix_rows = np.arange(p_len)
    logits = _structured_logits(rng, layout, prefix_rows, num_layers, num_heads, sharpness=sharpness,
                                object_patches=object_patches)[..., :p_len]
    prefix = AttentionPass(PassKind.PREFIX, reduce(masked_softmax(logits, mask[:p_len, :p_len])), layers,
                           prefix_rows, head_reduction=head_reduction)
    del logits
    passes = [prefix]
    suffix_rows = np.arange(p_len, n)
    base = _structured_logits(rng, layout, suffix_rows, num_layers, num_heads, sharpness=sharpness,
                              object_patches=object_patches)
    for s in range(num_steps):
        t = 1.0 - s / num_steps
        drift = rng.standard_normal(base.shape, dtype=np.float32) * np.float32(0.3 * sharpness)
        step_logits = base + drift
        step_logits[..., object_patches] += np.float32(2.0 * (1.0 - t))
        passes.append(AttentionPass(PassKind.SUFFIX, reduce(masked_softmax(step_logits, mask[p_len:])), layers,
                                    suffix_rows, step=s, time=t, head_reduction=head_reduction))
    horizon = layout.actions.size if layout.actions is not None else 0
    actions = rng.standard_normal((horizon, 7)).astype(np.float32)
    return Capture(layout=layout, num_layers=num_layers, num_heads=num_heads, passes=tuple(passes),
                   actions=actions, model="synthetic",
                   metadata={"prompt": prompt, "seed": seed, "object_patches": object_patches.tolist()})


def joint_attention(layout: TokenLayout, *, seed: int = 0, num_layers: int = 4, num_heads: int = 2,
                    sharpness: float = 1.0) -> np.ndarray:
    """Joint-pass attention [layer, head, n, n] (one softmax over the whole sequence, openpi masks)."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((num_layers, num_heads, layout.n, layout.n)).astype(np.float32) * sharpness
    return masked_softmax(logits, layout.attention_mask())


def capture_from_joint(layout: TokenLayout, joint: np.ndarray, *, logits_seed: int | None = None) -> Capture:
    """Split a joint-pass attention [layer, head, n, n] into an openpi-style capture.

    Prefix rows are re-softmaxed over prefix keys only, as the prefix pass computes them (valid
    rows are unchanged because suffix keys are masked for prefix queries; masked rows become
    uniform over the prefix, as in openpi); suffix rows are taken as they are (one step).
    """
    p_len = layout.prefix_len
    prefix = joint[:, :, :p_len, :p_len].copy()
    valid = layout.valid[:p_len]
    prefix[:, :, ~valid, :] = 1.0 / p_len
    layers = tuple(range(joint.shape[0]))
    passes = (AttentionPass(PassKind.PREFIX, prefix, layers, np.arange(p_len)),
              AttentionPass(PassKind.SUFFIX, joint[:, :, p_len:, :], layers, np.arange(p_len, layout.n),
                            step=0, time=1.0))
    return Capture(layout=layout, num_layers=joint.shape[0], num_heads=joint.shape[1], passes=passes,
                   model="synthetic")
