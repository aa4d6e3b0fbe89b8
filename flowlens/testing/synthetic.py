"""Synthetic captures: the one generator of structured random attention, with openpi's masks.

For tests, benchmarks, notebooks and the CLI's ``--checkpoint synthetic`` backend, which must run
without a model. Attention is a softmax of random logits under openpi's block-causal mask,
computed the way openpi computes it: masked logits set to -2.3819763e38 (``MASK_VALUE``, openpi's
``gemma`` constant) and a float32 softmax, so a fully masked query row comes out uniform over all
keys — the garbage TokenGraph removes. On top of the noise the logits carry the structure real
VLA attention has: sink tokens (BOS, "\\n") that grow with depth, "visual" heads (the first half)
whose state / action queries prefer the salient patches (``key_preference``) more and more over
the denoising steps, "text" heads (the second half) that read a few prompt words, image patches
that attend to their neighbours, and a local band between action tokens.

``structured_capture`` is the generator; ``synthetic_capture`` gives it a LIBERO (or toy) layout
and a few random "object" patches, and ``flowlens.pipeline.backends.SyntheticBackend`` gives it a
frame's layout and patch saliency. Every pass draws from its own random stream
(``[*stream, pass]``), so a pass is the same whatever else is recorded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from flowlens.core.capture import AttentionPass, Capture, PassKind
from flowlens.core.layout import TokenLayout
from flowlens.core.openpi_layout import pi05_layout, pi0_layout, synthetic_pieces
from flowlens.core.segments import ActionSegment, ImageSegment, StateSegment, TextSegment, TokenKind
from flowlens.errors import FlowlensError, unknown_name_error

MASK_VALUE = -2.3819763e38  # openpi's big negative logit for masked entries (gemma.py).
NOISE_RANK = 16  # rank of the random query · key logits
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
    x = np.where(mask, logits, np.float32(MASK_VALUE)).astype(np.float32, copy=False)
    x -= x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


def _noise(rng: np.random.Generator, shape: tuple[int, int], rows: int, keys: int, sharpness: float) -> np.ndarray:
    """float32 [layer, head, rows, keys] random logits of std ``sharpness``: rank-16 query · key products
    (4× cheaper than i.i.d. normals per entry; one BLAS thread, as many small products only contend)."""
    u = rng.standard_normal((*shape, rows, NOISE_RANK), dtype=np.float32)
    v = rng.standard_normal((*shape, NOISE_RANK, keys), dtype=np.float32)
    with threadpool_limits(1, user_api="blas"):
        logits = u @ v
    logits *= np.float32(sharpness / np.sqrt(NOISE_RANK))
    return logits


class _Structure:
    """The deterministic part of the logits of one capture (see the module docstring)."""

    def __init__(self, layout: TokenLayout, num_layers: int, num_heads: int, num_steps: int,
                 key_preference: np.ndarray, word_preference: np.ndarray):
        self.layout, self.num_steps = layout, num_steps
        self.groups = layout.groups()
        self.depth = np.linspace(0.0, 1.0, num_layers, dtype=np.float32)[:, None, None, None]
        self.visual = np.zeros((num_heads, 1, 1), np.float32)
        self.visual[: num_heads // 2] = 1.0  # "visual" heads; the others read the prompt
        self.key_pref, self.word_pref = key_preference, word_preference
        self.cell = np.full((layout.n, 3), -1000, np.int64)  # (camera, row, col) of image tokens
        for ci, cam in enumerate(layout.cameras):
            r, c = np.divmod(np.arange(cam.size), cam.grid[1])
            self.cell[cam.start : cam.stop] = np.stack([np.full(cam.size, ci), r, c], axis=1)

    def sinks(self, keys: np.ndarray) -> np.ndarray:
        b = np.zeros((self.depth.shape[0], 1, 1, keys.size), np.float32)
        for sink, strength in (("bos", 2.0), ("newline", 1.2)):
            if sink in self.groups:
                b[..., np.isin(keys, self.groups[sink])] += strength * (1.0 + 3.0 * self.depth)
        return b

    def prefix(self, rows: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Image queries read their own neighbourhood and, a little, the preferred patches."""
        cr, ck = self.cell[rows][:, None, :], self.cell[keys][None, :, :]
        same_cam = (cr[..., 0] == ck[..., 0]) & (cr[..., 0] >= 0)
        dist = np.abs(cr[..., 1:] - ck[..., 1:]).max(axis=-1)
        local = np.where(same_cam, np.where(dist == 0, 2.0, np.where(dist == 1, 1.0, 0.0)), 0.0)
        salient = np.where(cr[..., 0] >= 0, 0.2 * self.key_pref[keys][None, :], 0.0)
        return self.sinks(keys) + 0.3 * self.word_pref[keys] + (local + salient).astype(np.float32)

    def suffix(self, step: int, rows: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """State / action queries: visual heads follow the preferred patches (more as t → 0),
        text heads the preferred words, actions their neighbours in the chunk."""
        grow = np.float32(0.6 + 0.4 * step / self.num_steps)
        vis = self.visual * grow * self.key_pref[keys] * (0.4 + self.depth)
        txt = (1.0 - self.visual) * 0.9 * self.word_pref[keys]
        b = self.sinks(keys) + vis + txt
        act = self.layout.actions
        if act is not None:
            ra, ka = rows - act.start, keys - act.start
            band = (ra[:, None] >= 0) & (ka[None, :] >= 0) & (ka[None, :] < act.size)
            b = b + np.where(band, 1.5 - 0.25 * np.abs(ra[:, None] - ka[None, :]), 0.0).astype(np.float32)
        return b


def structured_capture(
    layout: TokenLayout,
    *,
    num_layers: int,
    num_heads: int,
    num_steps: int,
    steps: Sequence[int] | None = None,
    prefix: bool = True,
    rows: str = "all",
    key_preference: np.ndarray | None = None,
    sharpness: float = 1.0,
    head_reduction: str | None = None,
    stream: Sequence[int] = (0,),
    actions: np.ndarray | None = None,
    model: str = "synthetic",
    metadata: dict | None = None,
) -> Capture:
    """Structured random attention over ``layout`` in openpi's pass structure (the one generator).

    Args:
      layout: the token layout (masks, blocks, cameras, groups).
      num_layers, num_heads: model depth and query heads.
      num_steps: denoising steps of the flow (step s has time 1 - s / num_steps).
      steps: the steps recorded (default: all ``num_steps``).
      prefix: record the prefix pass.
      rows: "all" (every query row; fully masked rows are uniform, as openpi's softmax makes them)
        or "valid" (only rows of valid tokens, as flowlens records for analyses).
      key_preference: float32 [n], how much each key draws the visual heads' state / action
        queries (e.g. patch saliency); default none.
      sharpness: std of the random part of the logits (higher = more peaked attention).
      head_reduction: None (all heads) or "mean" (store the fused head only).
      stream: seeds of the random streams (pass p draws from ``default_rng([*stream, p])``).
      actions, model, metadata: passed to the Capture.
    Returns:
      Capture whose passes hold float32 [layer, head (1 when fused), rows, keys] probabilities.
    """
    if rows not in ("all", "valid"):
        raise unknown_name_error("rows", rows, ("all", "valid"))
    if head_reduction not in (None, "mean"):
        raise FlowlensError(f"head_reduction must be None or 'mean', got {head_reduction!r}.")
    steps = tuple(range(num_steps)) if steps is None else tuple(int(s) for s in steps)
    n, p_len, valid = layout.n, layout.prefix_len, layout.valid
    pref = np.zeros(n, np.float32) if key_preference is None else np.asarray(key_preference, np.float32)
    word_pref = np.zeros(n, np.float32)
    if "words" in layout.groups():  # a fixed per-prompt preference for some words
        words = layout.groups()["words"]
        word_pref[words] = 1.0 + np.random.default_rng([*stream, 0]).gamma(1.5, 0.8, words.size)
    structure = _Structure(layout, num_layers, num_heads, num_steps, pref, word_pref)
    mask = layout.attention_mask()
    shape = (num_layers, num_heads)

    def probs(pass_rows: np.ndarray, key_count: int, bias, pass_id: int) -> np.ndarray:
        keys = np.flatnonzero(valid[:key_count])
        live = pass_rows[valid[pass_rows]]
        rng = np.random.default_rng([*stream, pass_id])
        logits = _noise(rng, shape, live.size, keys.size, sharpness)
        logits += bias(live, keys)
        # Invalid keys are masked for valid rows: their probability is exactly 0 in openpi's softmax.
        probs = masked_softmax(logits, mask[np.ix_(live, keys)])
        if head_reduction == "mean":
            probs = probs.mean(axis=1, keepdims=True)
        out = np.zeros((*probs.shape[:3], key_count), np.float32)
        out[..., keys] = probs
        if live.size < pass_rows.size:  # fully masked rows: uniform over every key, as openpi's softmax
            every = np.full((*probs.shape[:2], pass_rows.size, key_count), np.float32(1.0 / key_count), np.float32)
            every[:, :, valid[pass_rows]] = out
            out = every
        return out

    def query_rows(lo: int, hi: int) -> np.ndarray:
        r = np.arange(lo, hi)
        return r if rows == "all" else r[valid[r]]

    layers = tuple(range(num_layers))
    passes = []
    if prefix:
        r = query_rows(0, p_len)
        passes.append(AttentionPass(PassKind.PREFIX, probs(r, p_len, structure.prefix, 1), layers, r,
                                    head_reduction=head_reduction))
    r = query_rows(p_len, n)
    for s in steps:
        passes.append(AttentionPass(
            PassKind.SUFFIX, probs(r, n, lambda q, k, s=s: structure.suffix(s, q, k), 2 + s), layers, r,
            step=s, time=1.0 - s / num_steps, head_reduction=head_reduction))
    return Capture(layout=layout, num_layers=num_layers, num_heads=num_heads, passes=tuple(passes),
                   actions=actions, model=model, metadata=dict(metadata or {}))


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
      Capture whose prefix pass has all prefix rows and whose suffix passes have all suffix rows;
      the visual heads prefer a few random "object" patches of the first camera
      (``metadata["object_patches"]``).

    >>> cap = synthetic_capture("toy", num_layers=2, num_heads=2, num_steps=3)
    >>> cap.layout.n, cap.num_steps, cap.prefix.probs.shape
    (20, 3, (2, 2, 16, 16))
    """
    if layout is None:
        makers = {"pi0": lambda: pi0_layout(prompt), "pi05": lambda: pi05_layout(prompt),
                  "toy": lambda: toy_layout()}
        if variant not in makers:
            raise unknown_name_error("variant", variant, VARIANTS)
        layout = makers[variant]()
    rng = np.random.default_rng(seed)
    cam = layout.cameras[0]
    object_patches = cam.start + rng.choice(cam.size, size=max(1, cam.size // 64), replace=False)
    preference = np.zeros(layout.n, np.float32)
    preference[object_patches] = 3.0
    horizon = layout.actions.size if layout.actions is not None else 0
    actions = rng.standard_normal((horizon, 7)).astype(np.float32)
    return structured_capture(
        layout, num_layers=num_layers, num_heads=num_heads, num_steps=num_steps, key_preference=preference,
        sharpness=sharpness, head_reduction=head_reduction, stream=(seed,), actions=actions,
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


def synthetic_group_mass(spec) -> list[dict]:
    """Example per-frame function for ``flowlens.io.run_batch`` without a model: a synthetic capture
    seeded by the ``FrameSpec``'s episode and frame, analysed with ``action_group_mass``. Options read from the
    spec: ``variant`` ("toy"), ``num_layers`` (2), ``num_heads`` (2), ``num_steps`` (2)."""
    from flowlens.analysis.rows import action_group_mass

    seed = int.from_bytes(hashlib.sha256(spec.key.encode()).digest()[:4], "little")
    capture = synthetic_capture(
        spec.option("variant", "toy"),
        seed=seed,
        num_layers=spec.option("num_layers", 2),
        num_heads=spec.option("num_heads", 2),
        num_steps=spec.option("num_steps", 2),
    )
    return action_group_mass(capture)
