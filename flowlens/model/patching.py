"""Activation patches: overwrite chosen activations of one run with those of another run.

TransformerLens-style activation patching, written for this model as data, not hooks: a
:class:`Patch` is a pytree of arrays that :func:`flowlens.model.gemma.transformer` reads while it
runs one pass (the prefix pass or one denoising step; one expert present). Two sites:

- the **residual stream**: the input of layer ``l`` (``l`` in 0..L-1) or, as "layer L", the final
  output before the final norm — the same indexing as the residual record
  (``gemma.transformer(record_residual=True)``, ``TransformerOut.residual``), which is where the
  values come from;
- a **head's output**: the per-head attention output before the output projection, layer
  ``l`` in 0..L-1 (recorded by ``gemma.transformer(record_heads=True)``).

Each site has a boolean ``where`` mask (per layer, batch element, token and, for heads, head) and
the values to write there; where the mask is False the run is untouched, so an all-False patch or
a run patched with its own values is bit-identical to the unpatched run. A :class:`SamplerPatch`
holds the prefix pass's patch and the denoising steps' (a leading step axis), the form
``flowlens.model.sampler.sample_patched`` takes. Patching a prefix token at layer ``l`` changes the
prefix keys and values of the layers after ``l``, i.e. the KV cache every denoising step reads.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Patch:
    """Activations of one pass to overwrite (a pytree; any site may be None).

    Attributes:
      residual_where: bool [L+1, B, T] residual positions to overwrite (index L: the final output).
      residual: float [L+1, B, T, D] the values written there.
      head_where: bool [L, B, T, N] per-head attention outputs to overwrite.
      heads: float [L, B, T, N, H] the values written there.
    """

    residual_where: jax.Array | None = None
    residual: jax.Array | None = None
    head_where: jax.Array | None = None
    heads: jax.Array | None = None

    def apply_residual(self, x: jax.Array, layer) -> jax.Array:
        """x [B, T, D] (the input of ``layer``, or the final output when ``layer`` = L) → patched x."""
        if self.residual_where is None:
            return x
        where = jax.lax.dynamic_index_in_dim(self.residual_where, layer, 0, keepdims=False)
        values = jax.lax.dynamic_index_in_dim(self.residual, layer, 0, keepdims=False)
        return jnp.where(where[..., None], values.astype(x.dtype), x)

    def head_patch(self, layer) -> tuple[jax.Array, jax.Array] | None:
        """(where [B, T, N], values [B, T, N, H]) of ``layer``, or None (no head site)."""
        if self.head_where is None:
            return None
        return (jax.lax.dynamic_index_in_dim(self.head_where, layer, 0, keepdims=False),
                jax.lax.dynamic_index_in_dim(self.heads, layer, 0, keepdims=False))

    def at_step(self, step) -> Patch:
        """The patch of denoising step ``step`` of a step-stacked patch (every array has a leading
        step axis)."""
        return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, step, 0, keepdims=False), self)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SamplerPatch:
    """The patches of one ``sample_actions`` run.

    Attributes:
      prefix: the prefix pass's Patch (T = prefix length, D = PaliGemma width) or None.
      steps: the denoising steps' Patch with a leading step axis on every array
        ([num_steps, L+1, B, T_s] ... with T_s the suffix length, D the action expert's width) or None.
    """

    prefix: Patch | None = None
    steps: Patch | None = None


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RunRecord:
    """Every activation a patch can read, for every batch element of one sampling run (numpy or jax).

    Attributes:
      prefix_residual: float32 [L+1, B, P, D0].
      prefix_heads: float32 [L, B, P, N, H].
      step_residual: float32 [num_steps, L+1, B, T_s, D1].
      step_heads: float32 [num_steps, L, B, T_s, N, H].
    """

    prefix_residual: jax.Array
    prefix_heads: jax.Array
    step_residual: jax.Array
    step_heads: jax.Array
