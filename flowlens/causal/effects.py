"""Effects of an intervention: how far an edited action chunk moved from the unedited one.

Every intervention of :mod:`flowlens.causal` (knockouts, activation patches) is run with the SAME
noise as its reference run, so the chunks differ only by the edit. Per frame:

- ``l2``: the L2 norm of (edited − reference) over the whole chunk [H, A];
- ``cosine``: the cosine similarity of the two flattened chunks (1: same direction);
- ``gap_closed`` (patching): 1 − ‖edited − source‖ / ‖reference − source‖, the share of the
  distance to the source run's chunk that the patch covers (1: the patch alone reproduces the
  source run, 0: no movement towards it; NaN when the two runs already agree).

>>> import numpy as np
>>> ref = np.zeros((1, 2, 2)); ref[0, 0, 0] = 1.0
>>> edited = np.zeros((1, 2, 2)); edited[0, 0, 1] = 1.0
>>> {k: [round(float(x), 4) for x in v] for k, v in action_effects(ref, edited).items()}
{'l2': [1.4142], 'cosine': [0.0]}
>>> [round(float(x), 4) for x in gap_closed(ref, edited, edited)]
[1.0]
"""

from __future__ import annotations

import numpy as np

from flowlens.errors import FlowlensError


def _flat(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, np.float64)
    if a.ndim != 3:
        raise FlowlensError(f"{name} must be action chunks [frames, horizon, action_dim], got shape {a.shape}.")
    return a.reshape(a.shape[0], -1)


def action_effects(reference: np.ndarray, edited: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame effect of an edit: float [F, H, A] twice → {"l2": [F], "cosine": [F]}."""
    r, e = _flat(reference, "reference"), _flat(edited, "edited")
    if r.shape != e.shape:
        raise FlowlensError(f"edited has shape {e.shape}, the reference {r.shape}; pass chunks of the same frames.")
    dot = np.sum(r * e, axis=1)
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(e, axis=1)
    return {"l2": np.linalg.norm(e - r, axis=1),
            "cosine": np.divide(dot, norms, out=np.full_like(dot, np.nan), where=norms > 0)}


def gap_closed(reference: np.ndarray, edited: np.ndarray, source: np.ndarray) -> np.ndarray:
    """float [F]: 1 − ‖edited − source‖ / ‖reference − source‖ per frame (NaN where the gap is 0)."""
    r, e, s = _flat(reference, "reference"), _flat(edited, "edited"), _flat(source, "source")
    gap = np.linalg.norm(r - s, axis=1)
    left = np.linalg.norm(e - s, axis=1)
    return 1.0 - np.divide(left, gap, out=np.full_like(gap, np.nan), where=gap > 0)
