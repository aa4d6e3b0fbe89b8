"""Numba kernels of :mod:`flowlens.core.onepass`: row sums, range count (and head mean) in one read.

``sums_bits_mean`` serves ``checked_fuse``; ``sums_range`` serves ``check_probabilities`` on large
arrays (a Capture's validation: five numpy reads of 640 MB took 0.5 s, one read here ≈ 0.1 s);
``sums_bits_transitions`` serves ``checked_transitions`` (small arrays straight to the rollout's
transition matrices).

Imported on first use (``import flowlens`` stays numpy-only).
Nothing here validates input.
"""

from __future__ import annotations

import numba
import numpy as np


# reassoc lets the float64 row sums vectorise; no "nnan": a NaN must reach its row's sum.
@numba.njit(nogil=True, fastmath={"reassoc", "nsz"}, inline="always")
def _head_rows(probs, bits, layer, q, acc, sums):
    """Row q of every head of a layer, read once: acc [key] = their sum (in acc's dtype, head by
    head from 0, so bit-identical to ``np.sum``'s first-to-last order), sums[layer, :, q] = each
    head row's float64 sum. Returns (sum of those sums, the largest of the rows' bits)."""
    num_heads, num_keys = probs.shape[1], probs.shape[3]
    top = bits[layer, 0, q, 0]
    total = 0.0
    acc[:] = 0.0
    for h in range(num_heads):
        row = probs[layer, h, q]
        brow = bits[layer, h, q]
        s = 0.0
        m = brow[0]
        for k in range(num_keys):
            x = row[k]
            s += x
            m = max(m, brow[k])
            acc[k] += x
        sums[layer, h, q] = s
        total += s
        top = max(top, m)
    return total, top


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def sums_bits_mean(probs, bits, hi_bits, fused, sums, fused_sums):
    """probs [layer, head, query, key] → fused [layer, query, key] = head mean (accumulated in
    fused's dtype, head by head, then divided by the head count, as ``np.mean(axis=1)``), sums
    [layer, head, query] float64 row sums of probs, fused_sums [layer, query] float64 row sums of
    fused. ``bits`` is probs viewed as unsigned ints of its width: one unsigned max (cheaper than
    counting) finds every entry that is negative (sign bit set), NaN, inf or above the float whose
    bits are ``hi_bits``. Returns whether any is (then the exact numpy checks must look)."""
    num_layers, num_heads, num_rows, num_keys = probs.shape
    top = bits[0, 0, 0, 0]
    count = fused.dtype.type(num_heads)
    for layer in range(num_layers):
        for q in range(num_rows):
            acc = fused[layer, q]
            top = max(top, _head_rows(probs, bits, layer, q, acc, sums)[1])
            t = 0.0
            for k in range(num_keys):
                acc[k] /= count
                t += acc[k]
            fused_sums[layer, q] = t
    return top > hi_bits


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def sums_range(probs, sums, lo, hi):
    """probs [row, key] → sums [row] float64 row sums (a NaN or inf makes its row's sum non-finite).
    Returns how many entries lie outside [lo, hi]. One read of probs (``check_probabilities``)."""
    num_rows, num_keys = probs.shape
    outside = 0
    for q in range(num_rows):
        row = probs[q]
        s = 0.0
        n_out = 0
        for k in range(num_keys):
            x = row[k]
            s += x
            n_out += (x < lo) | (x > hi)
        sums[q] = s
        outside += n_out
    return outside




@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def sums_bits_transitions(probs, bits, hi_bits, acc, trans, sums, r):
    """probs [layer, head, node, node] float → trans [layer, node, node] = rownorm((1 - r)·Ā + r·I)
    with Ā the head mean (summed in the dtype of the scratch row ``acc`` [node]; d = (1 - r)·rowsum(Ā)
    + r from the float64 row sums, 1 where that is <= 0) and sums [layer, head, node] float64 row
    sums of probs. ``bits`` and ``hi_bits``: as ``sums_bits_mean``. Returns whether any entry is
    flagged (then the exact numpy checks must look). One read, no fused intermediate: the
    small-array route of ``attention_rollout``."""
    num_layers, num_heads, num_rows, num_keys = probs.shape
    top = bits[0, 0, 0, 0]
    for layer in range(num_layers):
        for q in range(num_rows):
            total, m = _head_rows(probs, bits, layer, q, acc, sums)
            top = max(top, m)
            d = (1.0 - r) * (total / num_heads) + r
            if not d > 0.0:
                d = 1.0
            scale = (1.0 - r) / (num_heads * d)
            out = trans[layer, q]
            for k in range(num_keys):
                out[k] = acc[k] * scale
            out[q] += r / d
    return top > hi_bits
