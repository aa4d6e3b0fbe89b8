"""Numba kernels of :mod:`flowlens.core.onepass`: row sums, range count (and head mean) in one read.

``sums_range_mean`` serves ``checked_fuse``; ``sums_range`` serves ``check_probabilities`` on large
arrays (a Capture's validation: five numpy reads of 640 MB took 0.5 s, one read here ≈ 0.1 s).

Imported on first use (``import flowlens`` stays numpy-only).
Nothing here validates input.
"""

from __future__ import annotations

import numba


# reassoc lets the float64 row sums vectorise; no "nnan": a NaN must reach its row's sum.
@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def sums_range_mean(probs, fused, sums, fused_sums, lo, hi):
    """probs [layer, head, query, key] → fused [layer, query, key] = head mean (accumulated in
    fused's dtype, head by head, then divided by the head count, as ``np.mean(axis=1)``), sums
    [layer, head, query] float64 row sums of probs, fused_sums [layer, query] float64 row sums of
    fused. Returns how many entries of probs lie outside [lo, hi]."""
    num_layers, num_heads, num_rows, num_keys = probs.shape
    outside = 0
    count = fused.dtype.type(num_heads)
    for layer in range(num_layers):
        for q in range(num_rows):
            acc = fused[layer, q]
            for h in range(num_heads):
                row = probs[layer, h, q]
                s = 0.0
                n_out = 0
                if h == 0:
                    for k in range(num_keys):
                        x = row[k]
                        s += x
                        n_out += (x < lo) | (x > hi)
                        acc[k] = x
                else:
                    for k in range(num_keys):
                        x = row[k]
                        s += x
                        n_out += (x < lo) | (x > hi)
                        acc[k] += x
                sums[layer, h, q] = s
                outside += n_out
            t = 0.0
            for k in range(num_keys):
                acc[k] /= count
                t += acc[k]
            fused_sums[layer, q] = t
    return outside


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
