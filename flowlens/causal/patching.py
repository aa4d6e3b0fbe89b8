"""Activation-patching sweeps: move one run's activations into another, one row per frame × site.

TransformerLens-style patching for Pi0 / Pi0.5. Two runs of every frame share the noise: the
*clean* input and a *corrupted* one (a swapped prompt, another frame, a failure episode's frame).
A :class:`PatchSite` names where to patch:

- ``layer`` and ``head=None``: the residual stream, the input of layer ``layer`` (``layer = L``:
  the final output before the final norm);
- ``layer`` and ``head=n``: head n's attention output (before the output projection) in ``layer``;
- ``tokens``: a token selection (``flowlens.core.selection``: a selection string such as
  ``"words | state"``, a ``Selection``, group names, token indices; None: every token of the pass),
  resolved by :func:`~flowlens.core.selection.resolve_mask` like every other selection;
- ``step``: a denoising step, or ``"prefix"`` for the prefix pass (whose patched activations
  change the KV cache every step reads).

:func:`patch_sweep` records both runs (:func:`flowlens.model.sample_patched` with ``record=True``),
then, per site, re-runs the receiving run (``into="clean"``: the clean one, values from the
corrupted run; ``into="corrupt"``: the reverse) with that one site overwritten, all frames of a
batch at once (one compile for the whole sweep), and reports the effect (:mod:`flowlens.causal.effects`:
``l2`` and ``cosine`` vs the receiving run, ``gap_closed`` towards the source run).

Example::

    sites = patch_sites(layers=range(19), steps=["prefix"], tokens={"words": "words"})
    table = patch_sweep(model, params, clean_frames, swapped_prompt_frames, sites)
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from flowlens.causal.batching import check_frames, frame_batches, frame_noise, pad_rows, stack
from flowlens.causal.effects import action_effects, gap_closed
from flowlens.causal.sweeps import Score
from flowlens.core.selection import resolve_mask
from flowlens.errors import FlowlensError, unknown_name_error
from flowlens.model.patching import Patch, SamplerPatch
from flowlens.model.sampler import sample_patched

DIRECTIONS = ("clean", "corrupt")


@dataclasses.dataclass(frozen=True)
class PatchSite:
    """One place to patch (see the module docstring).

    Attributes:
      layer: residual: 0..L (L: final output); head: 0..L-1.
      step: denoising step index (negative counts from the end) or "prefix".
      tokens: token selection (group name(s), indices) or None (every token of the pass).
      head: None (residual stream) or a query head.
      label: name of the token selection in the table (default: the selection itself).
    """

    layer: int
    step: int | str = "prefix"
    tokens: str | Sequence[str] | Sequence[int] | None = None
    head: int | None = None
    label: str | None = None

    @property
    def site(self) -> str:
        return "residual" if self.head is None else "head"

    @property
    def token_label(self) -> str:
        if self.label is not None:
            return self.label
        if self.tokens is None:
            return "all"
        if isinstance(self.tokens, str):
            return self.tokens
        return ",".join(str(t) for t in np.asarray(self.tokens).tolist())


def patch_sites(layers: Sequence[int] | range, steps: Sequence[int | str] = ("prefix",),
                tokens: Mapping[str, object] | None = None, heads: Sequence[int] | None = None) -> list[PatchSite]:
    """Every (layer × step × token selection [× head]) site, layer-major; tokens: label → selection
    (None: one selection "all", every token of the pass); heads None: residual-stream sites."""
    tokens = {"all": None} if tokens is None else dict(tokens)
    return [PatchSite(layer=int(la), step=st, tokens=sel, head=None if h is None else int(h), label=lab)
            for la, st, (lab, sel), h in itertools.product(layers, steps, tokens.items(),
                                                           [None] if heads is None else heads)]


def _check_site(site: PatchSite, i: int, cfg, num_steps: int) -> int | None:
    """Validate a site; return its step index (None: prefix)."""
    if not isinstance(site, PatchSite):
        raise FlowlensError(f"sites[{i}] must be a PatchSite, got {type(site).__name__}; build them with "
                            "patch_sites().")
    top = cfg.num_layers if site.head is None else cfg.num_layers - 1
    if not 0 <= site.layer <= top:
        what = ("residual layers are 0..L (L = the final output)" if site.head is None
                else "head outputs exist in layers 0..L-1")
        raise FlowlensError(f"sites[{i}].layer is {site.layer}, but the model has {cfg.num_layers} layers; "
                            f"{what}: pick 0–{top}.")
    if site.head is not None and not 0 <= site.head < cfg.num_heads:
        raise FlowlensError(f"sites[{i}].head is {site.head}, but the model has {cfg.num_heads} heads "
                            f"(0–{cfg.num_heads - 1}).")
    if site.step == "prefix":
        return None
    if isinstance(site.step, str):
        raise unknown_name_error(f"sites[{i}].step", site.step, ["prefix"])
    if not -num_steps <= int(site.step) < num_steps:
        raise FlowlensError(f"sites[{i}].step is {site.step}, but sampling runs {num_steps} denoising steps "
                            f"(0–{num_steps - 1}); pick one of those or 'prefix'.")
    return int(site.step) % num_steps


def _site_tokens(site: PatchSite, i: int, recv_layout, src_layout) -> np.ndarray:
    """bool [T of the site's pass]: the site's tokens on the receiving layout (checked on the source's)."""
    p = recv_layout.prefix_len
    if src_layout.prefix_len != p or src_layout.n != recv_layout.n:
        raise FlowlensError(
            f"clean and corrupt layouts differ ({recv_layout.n} tokens, prefix {p} vs {src_layout.n}, "
            f"prefix {src_layout.prefix_len}); patching needs position-aligned runs: use inputs with the same "
            "cameras and prompt length (pad the prompt), or another frame of the same task.")
    if site.tokens is None:
        sel = np.ones(recv_layout.n, bool)
    else:
        sel = resolve_mask(recv_layout, site.tokens, argument=f"sites[{i}].tokens")
        if not np.array_equal(sel, resolve_mask(src_layout, site.tokens, argument=f"sites[{i}].tokens")):
            raise FlowlensError(
                f"sites[{i}].tokens={site.tokens!r} selects different tokens in the clean and the corrupt layout "
                "(e.g. prompts of different lengths); pass token indices, or inputs with the same layout.")
    part = sel[:p] if site.step == "prefix" else sel[p:]
    if not part.any():
        where = "the prefix pass" if site.step == "prefix" else f"denoising step {site.step} (suffix tokens only)"
        raise FlowlensError(f"sites[{i}].tokens={site.tokens!r} selects no token of {where}; pick tokens of that "
                            "pass (e.g. 'actions' / 'state' for a step, a camera or 'words' for the prefix).")
    return part


def _patch(site: PatchSite, step: int | None, where: list[np.ndarray], src, num_steps: int, b: int) -> SamplerPatch:
    """The SamplerPatch writing ``src`` (RunRecord of the batch) at one site; where[j]: bool tokens of frame j."""
    L = src.prefix_heads.shape[0]
    p, ts = src.prefix_residual.shape[2], src.step_residual.shape[3]
    n = src.prefix_heads.shape[3]
    pr = np.zeros((L + 1, b, p), bool)
    ph = np.zeros((L, b, p, n), bool)
    sr = np.zeros((num_steps, L + 1, b, ts), bool)
    sh = np.zeros((num_steps, L, b, ts, n), bool)
    for j, w in enumerate(where):
        if step is None and site.head is None:
            pr[site.layer, j] = w
        elif step is None:
            ph[site.layer, j, w, site.head] = True
        elif site.head is None:
            sr[step, site.layer, j] = w
        else:
            sh[step, site.layer, j, w, site.head] = True
    return SamplerPatch(prefix=Patch(pr, src.prefix_residual, ph, src.prefix_heads),
                        steps=Patch(sr, src.step_residual, sh, src.step_heads))


def _check_pairs(clean: list, corrupt: list) -> None:
    if len(clean) != len(corrupt):
        raise FlowlensError(f"clean has {len(clean)} frames and corrupt {len(corrupt)}; pair every clean frame "
                            "with one corrupted frame.")


def patch_frames(model, params, receiving, source, sites: Sequence[PatchSite], *, noise: np.ndarray,
                 num_steps: int | None = None, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``source`` and ``receiving`` frames and the receiving run patched at each site from the source run.

    The one patching loop (:func:`patch_sweep` and ``flowlens.hypotheses.Evidence.patched`` use it):
    frames in batches of ``batch_size`` (padded to one shape, one compile), every site one call.

    Args:
      receiving, source: F batch-1 Observations each, frame i of one paired with frame i of the other.
      sites: S PatchSites; noise: float32 [F, H_a, A], shared by both runs of a frame.
    Returns:
      (receiving run [F, H_a, A], source run [F, H_a, A], patched runs [S, F, H_a, A]), float32.
    Raises:
      FlowlensError: unequal frame counts, mismatched layouts, unknown token selection, layer /
        head / step out of range, a selection with no token in the site's pass, no sites.
    """
    recv, srcs = check_frames(receiving, "clean"), check_frames(source, "corrupt")
    _check_pairs(recv, srcs)
    sites = list(sites)
    if not sites:
        raise FlowlensError("sites is empty; build sites with patch_sites(layers=..., steps=..., tokens=...).")
    cfg = model.config
    num_steps = cfg.num_steps if num_steps is None else int(num_steps)
    steps = [_check_site(s, i, cfg, num_steps) for i, s in enumerate(sites)]
    recv_lay = [model.layout(o, 0) for o in recv]
    src_lay = [model.layout(o, 0) for o in srcs]
    tokens = [[_site_tokens(s, i, r, c) for r, c in zip(recv_lay, src_lay, strict=True)]
              for i, s in enumerate(sites)]
    noise = frame_noise(cfg, len(recv), noise=noise)
    size = min(batch_size, len(recv))
    base = np.zeros_like(noise)
    source_out = np.zeros_like(noise)
    patched = np.zeros((len(sites),) + noise.shape, np.float32)
    for batch in frame_batches(range(len(recv)), size):
        nz = pad_rows(noise[batch], size)
        r_obs, s_obs = stack([recv[f] for f in batch], size), stack([srcs[f] for f in batch], size)
        base[batch] = sample_patched(model, params, r_obs, noise=nz, num_steps=num_steps)[0][: len(batch)]
        out, rec = sample_patched(model, params, s_obs, noise=nz, num_steps=num_steps, record=True)
        source_out[batch] = out[: len(batch)]
        for i, site in enumerate(sites):
            where = [tokens[i][f] for f in batch] + [np.zeros_like(tokens[i][batch[0]])] * (size - len(batch))
            patch = _patch(site, steps[i], where, rec, num_steps, size)
            patched[i, batch] = sample_patched(model, params, r_obs, noise=nz, num_steps=num_steps,
                                               patch=patch)[0][: len(batch)]
    return base, source_out, patched


def patch_sweep(model, params, clean, corrupt, sites: Sequence[PatchSite], *, into: str = "clean",
                noise: np.ndarray | None = None, seed: int = 0, num_steps: int | None = None, batch_size: int = 8,
                score: Score | None = None) -> pd.DataFrame:
    """Patch every site, one at a time, over every frame; one row per frame × site.

    Args:
      model, params: the policy.
      clean, corrupt: batch-1 Observations, frame i of one paired with frame i of the other
        (same token layout at the patched tokens).
      sites: PatchSites (see :func:`patch_sites`).
      into: "clean" (the clean run receives the corrupted run's activations) or "corrupt".
      noise, seed, num_steps, batch_size: as :func:`flowlens.causal.sweeps.knockout_sweep`.
      score: optional task score (columns for the patched run, ``base_`` for the receiving run,
        ``source_`` for the source run).

    Returns:
      DataFrame with frame, site, layer, head, step, tokens, l2, cosine, gap_closed [+ scores].

    Raises:
      FlowlensError: unequal frame counts, mismatched layouts, unknown token selection, layer /
        head / step out of range, a selection with no token in the site's pass.
    """
    clean, corrupt = check_frames(clean, "clean"), check_frames(corrupt, "corrupt")
    _check_pairs(clean, corrupt)
    if into not in DIRECTIONS:
        raise unknown_name_error("into", into, list(DIRECTIONS))
    recv, srcs = (clean, corrupt) if into == "clean" else (corrupt, clean)
    sites = list(sites)
    noise = frame_noise(model.config, len(recv), noise=noise, seed=seed)
    base, source, patched = patch_frames(model, params, recv, srcs, sites, noise=noise, num_steps=num_steps,
                                         batch_size=batch_size)
    idx = np.arange(len(recv))
    extra = {}
    if score is not None:
        extra.update({f"base_{k}": np.asarray(v) for k, v in score(idx, base).items()})
        extra.update({f"source_{k}": np.asarray(v) for k, v in score(idx, source).items()})
    rows = []
    for i, site in enumerate(sites):
        cols = {"frame": idx, "site": site.site, "layer": site.layer,
                "head": -1 if site.head is None else site.head, "step": str(site.step),
                "tokens": site.token_label, **action_effects(base, patched[i]),
                "gap_closed": gap_closed(base, patched[i], source)}
        if score is not None:
            cols.update({k: np.asarray(v) for k, v in score(idx, patched[i]).items()})
            cols.update(extra)
        rows.append(pd.DataFrame(cols))
    return pd.concat(rows, ignore_index=True)
