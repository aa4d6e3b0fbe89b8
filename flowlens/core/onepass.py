"""One pass over attention: check it holds probabilities and fuse its heads in one read.

``check_probabilities`` followed by ``fuse_heads`` reads ``[layer, head, query, key]`` attention
five times from memory (finite, min, max, row sums, fusion): at Pi0 scale (18 × 8 × 867², 433 MB
of float32) that is 0.3 s, ten times the rollout it guards. For the head mean of a large float32
or float64 array, a numba kernel reads each row once and computes its float64 sum, checks its range
and accumulates the fused row (bit-identical to ``fuse_heads``). The range check is one unsigned max
over the floats' bits (negative floats have the sign bit set; NaN, inf and values above 1 + 1e-6
have larger bits than 1 + 1e-6): whatever it flags is sent to ``check_probabilities`` on the whole
array, which raises naming the first bad entry and the value range exactly (or passes -0.0 and
negatives above -1e-6). The checks, errors and warnings are those of ``check_probabilities``.
Below 256 nodes ``checked_transitions`` goes from the raw attention straight to the rollout's
transition matrices in the same one read (n = 54, 18 × 8 heads: ≈ 0.14 ms); from 256 nodes
``streamed_fuse`` fuses the layers last to first on a worker thread while the rollout's top-down
chain multiplies those already fused. The other fusions and dtypes take the two-step numpy route.
numba is imported on the first call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np

from flowlens.core.capture import ROW_SUM_TOLERANCE, check_probabilities, check_row_sums
from flowlens.core.graph import fuse_heads


def checked_fuse(probs: np.ndarray, name: str, *, heads: str | int | Sequence[int] = "mean",
                 dtype=np.float32, valid_rows: np.ndarray | None = None,
                 tolerance: float = ROW_SUM_TOLERANCE, stacklevel: int = 3) -> np.ndarray:
    """``check_probabilities(probs, name, ...)`` then ``fuse_heads(probs, heads, axis=1, dtype=dtype)``,
    in one read of ``probs`` where it counts.

    Args:
      probs: [layer, head, query, key] attention probabilities.
      name: how to call the array in messages.
      heads: "mean" | "max" | "min" | a head index | a list of head indices (not "keep").
      dtype: accumulation and output dtype of the fusion.
      valid_rows: bool [query]; only these rows are checked for their sum (None: all rows).
      stacklevel: of the row-sum warning (3: the caller of the function that called this one).
    Returns:
      (fused, row_sums): ``dtype`` [layer, query, key] equal to ``fuse_heads(probs, heads, axis=1,
      dtype=dtype)``, and its float64 [layer, query] row sums.
    Raises:
      FlowlensError: on NaN/inf or values outside [0, 1], as ``check_probabilities``.

    >>> p = np.array([[[[0.25, 0.75]], [[0.75, 0.25]]]], dtype=np.float32)  # [layer, head, q, k]
    >>> checked_fuse(p, "attention")
    (array([[[0.5, 0.5]]], dtype=float32), array([[1.]]))
    """
    use_kernel = (isinstance(heads, str) and heads == "mean" and probs.size > 0
                  and probs.dtype in (np.float32, np.float64) and np.dtype(dtype) in (np.float32, np.float64))
    if not use_kernel:
        check_probabilities(probs, name, valid_rows=valid_rows, tolerance=tolerance, stacklevel=stacklevel + 1)
        fused = fuse_heads(probs, heads, axis=1, dtype=dtype)
        return fused, fused.sum(axis=-1, dtype=np.float64)
    from flowlens.core._onepass_kernel import sums_bits_mean  # numba: loaded on first use

    num_layers, num_heads, num_rows, num_keys = probs.shape
    fused = np.empty((num_layers, num_rows, num_keys), dtype=dtype)
    sums = np.empty((num_layers, num_heads, num_rows))
    fused_sums = np.empty((num_layers, num_rows))
    top = _top_bits(probs.dtype)
    flagged = sums_bits_mean(probs, probs.view(top.dtype), top, fused, sums, fused_sums)
    _finish_checks(flagged, probs, sums, name, valid_rows, tolerance, stacklevel + 1)
    return fused, fused_sums


def _finish_checks(flagged: bool, probs: np.ndarray, sums: np.ndarray, name: str, valid_rows, tolerance: float,
                   stacklevel: int) -> None:
    """After a kernel's read: flagged entries (negative, non-finite or above 1) go to the exact checks,
    which raise naming them (or pass -0.0 and tiny negatives); else only the row sums are checked."""
    if flagged:
        check_probabilities(probs, name, valid_rows=valid_rows, tolerance=tolerance, stacklevel=stacklevel + 1)
    else:
        check_row_sums(sums, name, valid_rows=valid_rows, tolerance=tolerance, stacklevel=stacklevel + 1)


@contextlib.contextmanager
def streamed_fuse(probs: np.ndarray, name: str, *, dtype=np.float32, tolerance: float = ROW_SUM_TOLERANCE,
                  stacklevel: int = 3):
    """``checked_fuse`` of the head mean of a float32/float64 array, its layers fused last to first on a
    worker thread while the caller works on those already fused (the rollout's top-down chain: the
    numba kernel and BLAS both release the GIL, so the one read of the attention overlaps the products).

    Yields:
      (fused, row_sums, wait): as ``checked_fuse`` ([layer, query, key] and float64 [layer, query]),
      filled layer by layer; ``wait(layer)`` blocks until that layer is. The checks (errors and
      warnings as ``checked_fuse``) run when the block ends.
    """
    from concurrent.futures import ThreadPoolExecutor

    from flowlens.core._onepass_kernel import sums_bits_mean  # numba: loaded on first use

    num_layers, num_heads, num_rows, num_keys = probs.shape
    fused = np.empty((num_layers, num_rows, num_keys), dtype=dtype)
    sums = np.empty((num_layers, num_heads, num_rows))
    fused_sums = np.empty((num_layers, num_rows))
    top = _top_bits(probs.dtype)
    bits = probs.view(top.dtype)

    def fuse(layer: int) -> bool:
        one = slice(layer, layer + 1)
        return sums_bits_mean(probs[one], bits[one], top, fused[one], sums[one], fused_sums[one])

    with ThreadPoolExecutor(max_workers=1) as pool:
        done = {layer: pool.submit(fuse, layer) for layer in reversed(range(num_layers))}
        try:
            yield fused, fused_sums, lambda layer: done[layer].result()
        except BaseException:
            for job in done.values():
                job.cancel()
            raise
        flagged = any(job.result() for job in done.values())
    # frames: _finish_checks, this generator, contextlib's __exit__, the caller
    _finish_checks(flagged, probs, sums, name, None, tolerance, stacklevel + 2)


def _top_bits(dtype: np.dtype):
    """Bits (as the unsigned int of the float's width) of the largest ``dtype`` float <= 1 + 1e-6:
    a float's bits exceed them iff it is negative, NaN, inf or above 1 + 1e-6."""
    top = dtype.type(1 + 1e-6)
    if top > 1 + 1e-6:
        top = np.nextafter(top, dtype.type(0))
    return top.view(np.dtype(f"u{dtype.itemsize}"))


def checked_transitions(probs: np.ndarray, name: str, *, residual: float, dtype=np.float32,
                        sum_dtype=None, tolerance: float = ROW_SUM_TOLERANCE, stacklevel: int = 3) -> np.ndarray:
    """``check_probabilities(probs, name)`` and the rollout's transitions ``rownorm((1 - r)·Ā + r·I)``
    of the head mean Ā, in one read of ``probs`` (the small-array route of ``attention_rollout``).

    Args:
      probs: float32 or float64 [layer, head, node, node] attention probabilities.
      name: how to call the array in messages.
      residual: r in [0, 1].
      dtype: of the transitions (row normalisers are summed in float64).
      sum_dtype: the head mean is summed in (default ``dtype``).
      stacklevel: of the row-sum warning (3: the caller of the function that called this one).
    Returns:
      ``dtype`` [layer, node, node] transitions (rows with d = (1 - r)·rowsum(Ā) + r <= 0 use d = 1).
    Raises:
      FlowlensError: on NaN/inf or values outside [0, 1], as ``check_probabilities``.

    >>> p = np.array([[[[0.25, 0.75], [0.5, 0.5]], [[0.75, 0.25], [0.5, 0.5]]]])  # [layer, head, q, k]
    >>> checked_transitions(p, "attention", residual=0.5, dtype=np.float64)[0]
    array([[0.75, 0.25],
           [0.25, 0.75]])
    """
    from flowlens.core._onepass_kernel import sums_bits_transitions  # numba: loaded on first use

    probs = np.ascontiguousarray(probs)
    num_layers, num_heads, num_rows, num_keys = probs.shape
    trans = np.empty((num_layers, num_rows, num_keys), dtype=dtype)
    sums = np.empty((num_layers, num_heads, num_rows))
    top = _top_bits(probs.dtype)
    acc = np.empty(num_keys, dtype=dtype if sum_dtype is None else sum_dtype)
    if sums_bits_transitions(probs, probs.view(top.dtype), top, acc, trans, sums, float(residual)):
        # negative, non-finite or above 1: the exact checks raise, naming it (or pass -0.0 and tiny negatives)
        check_probabilities(probs, name, tolerance=tolerance, stacklevel=stacklevel + 1)
    else:
        check_row_sums(sums, name, tolerance=tolerance, stacklevel=stacklevel + 1)
    return trans
