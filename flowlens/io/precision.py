"""Reduced-precision encodings for attention probabilities on disk, with their error bounds.

Attention probabilities live in [0, 1]. flowlens stores them in one of four encodings; each decodes
back to float32 and has a guaranteed bound on the absolute error of every entry:

=============  =====================================================  ===========  =================
precision      stored as                                              bytes/entry  max abs error
=============  =====================================================  ===========  =================
``float32``    the float32 values, bitwise                             4            0
``float16``    IEEE half, round to nearest                             2            2**-12 ≈ 2.44e-4
``bfloat16``   the upper 16 bits of the float32, round to nearest      2            2**-9  ≈ 1.95e-3
               even, as ``uint16`` (no ml_dtypes needed to read)
``uint8``      ``round(p / rowmax * 255)`` per (layer, head, query)    1 (+4/row)   rowmax/510 ≤ 1.96e-3
               row, plus the float32 ``rowmax`` of each row
=============  =====================================================  ===========  =================

The bounds hold for values in [0, 1]: half-ulp of the format at 1.0 (float16: 2**-11 / 2,
bfloat16: 2**-8 / 2) and half a quantisation step (uint8). ``uint8`` is relative to each row's
largest entry, so diffuse rows (entries ≈ 1/n) keep ~2 significant digits. Rows of a decoded
capture may not sum to 1 exactly; flowlens never renormalises them silently.
"""

from __future__ import annotations

import numpy as np

from flowlens.errors import unknown_name_error

PRECISIONS = ("float32", "float16", "bfloat16", "uint8")

# Guaranteed max |decoded - original| for probabilities in [0, 1] (float32 arithmetic slack added).
ERROR_BOUND = {"float32": 0.0, "float16": 2.0**-12, "bfloat16": 2.0**-9, "uint8": 1 / 510 + 1e-6}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise unknown_name_error("precision", precision, PRECISIONS)
    return precision


def encode(probs: np.ndarray, precision: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Encode float32 ``probs [..., key]``; returns ``(stored, scale)`` (``scale`` only for uint8:
    float32 ``[...]``, the max of each row)."""
    check_precision(precision)
    probs = np.asarray(probs, dtype=np.float32)
    if precision == "float32":
        return probs, None
    if precision == "float16":
        return probs.astype(np.float16), None
    if precision == "bfloat16":
        u = np.ascontiguousarray(probs).view(np.uint32)
        rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
        return rounded.astype(np.uint16), None
    scale = probs.max(axis=-1) if probs.shape[-1] else np.zeros(probs.shape[:-1], np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    q = np.rint(probs / safe[..., None] * np.float32(255.0))
    return np.clip(q, 0, 255).astype(np.uint8), scale.astype(np.float32)


def decode(stored: np.ndarray, precision: str, scale: np.ndarray | None = None) -> np.ndarray:
    """Inverse of ``encode``: float32 array of the stored shape."""
    check_precision(precision)
    if precision == "float32":
        return np.asarray(stored, dtype=np.float32)
    if precision == "float16":
        return stored.astype(np.float32)
    if precision == "bfloat16":
        return (stored.astype(np.uint32) << np.uint32(16)).view(np.float32)
    if scale is None:
        raise ValueError("uint8 decoding needs the per-row scale array")
    return stored.astype(np.float32) * (scale.astype(np.float32) / np.float32(255.0))[..., None]


def encode_with_error(probs: np.ndarray, precision: str) -> tuple[np.ndarray, np.ndarray | None, float]:
    """``encode`` plus the measured max abs error of the round trip (computed layer by layer to keep
    the extra memory to one layer's slice)."""
    stored, scale = encode(probs, precision)
    if precision == "float32" or probs.size == 0:
        return stored, scale, 0.0
    err = 0.0
    for i in range(probs.shape[0]):
        back = decode(stored[i], precision, None if scale is None else scale[i])
        err = max(err, float(np.abs(back - probs[i]).max(initial=0.0)))
    return stored, scale, err
