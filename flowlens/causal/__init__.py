"""Causal interventions through the real model, batched over frames, one tidy row per frame × edit.

Knockout sweeps (:mod:`~flowlens.causal.sweeps`) remove attention edges; activation patching
(:mod:`~flowlens.causal.patching`) moves residual-stream or head activations from a corrupted run
into a clean one; :mod:`~flowlens.causal.effects` measures how the action chunk moved, and
:mod:`~flowlens.causal.tabletop` scores it on the embedded task.
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
