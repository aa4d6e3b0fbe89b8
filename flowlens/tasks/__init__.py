"""Synthetic tasks with known ground truth, and the small models flowlens ships trained on them.

``flowlens.tasks.tabletop``: a tabletop pick-and-place task (objects named by colour and kind,
base and wrist cameras, expert action chunks, per-frame object masks) and the embedded default
model ``builtin:tabletop``, a tiny Pi0 trained on it.
"""
