"""Causal interventions through the real model, batched over frames, one tidy row per frame × edit.

Knockout sweeps (:mod:`~flowlens.causal.sweeps`) remove attention edges; activation patching
(:mod:`~flowlens.causal.patching`) moves residual-stream or head activations from a corrupted run
into a clean one; :mod:`~flowlens.causal.effects` measures how the action chunk moved, and
:mod:`~flowlens.causal.tabletop` scores it on the embedded task. Every intervention runs through
one batched path (:func:`~flowlens.causal.batching.sample_frames` for knockouts,
:func:`~flowlens.causal.patching.patch_frames` for patches; frames share a call only when their
selections resolve identically) with the clean run's noise, and the same loops serve
``flowlens.hypotheses`` (``Evidence.actions(knockouts)``, ``Evidence.patched(source, site)``).

The API, on the embedded model (JAX, so not a doctest)::

    from flowlens.causal import (case_frames, edge_knockouts, heading_score, knockout_sweep, load_task,
                                 patch_sites, patch_sweep, sliding_windows, swapped_prompt)
    from flowlens.tasks.tabletop.evaluate import held_out_cases

    model, params, tok, stats = load_task()
    cases = [c for c in held_out_cases(32) if c.swap >= 0]
    clean = case_frames(cases, tok, model.config, stats)
    score = heading_score(cases, stats, model.config)

    # knockouts: may the action tokens read the words, layer window by layer window?
    kos = edge_knockouts("actions", "words", windows=sliding_windows(18, 6, 6))
    table = knockout_sweep(model, params, clean, kos, score=score)   # frame, intervention, l2, cosine, hit ...
    table.groupby("intervention")[["l2", "hit", "base_hit"]].mean()

    # patching: both cameras' residual at prefix layer l, from the run whose prompt names another object
    swapped = case_frames(cases, tok, model.config, stats, prompts=[swapped_prompt(c) for c in cases])
    sites = patch_sites(range(0, 19, 3), steps=["prefix"], tokens={"cameras": "base_0_rgb | left_wrist_0_rgb"})
    table = patch_sweep(model, params, clean, swapped, sites,
                        score=heading_score(cases, stats, model.config, named=[c.swap for c in cases]))
    table.groupby("layer")[["gap_closed", "hit"]].mean()   # hit: heads for the swapped object
"""

from flowlens._lazy import lazy_getattr

# effects is numpy-only; sweeps / patching / tabletop run the model (JAX) and load on first use.
from flowlens.causal.effects import action_effects as action_effects
from flowlens.causal.effects import gap_closed as gap_closed

_MODULES = {
    "flowlens.causal.patching": ("PatchSite", "patch_frames", "patch_sites", "patch_sweep"),
    "flowlens.causal.batching": ("sample_frames",),
    "flowlens.causal.sweeps": ("edge_knockouts", "knockout_sweep", "sliding_windows"),
    "flowlens.causal.tabletop": ("case_frames", "heading_score", "load_task", "swapped_prompt"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}
__getattr__ = lazy_getattr("flowlens.causal", _HOME, globals())

__all__ = ["action_effects", "gap_closed", *_HOME]
