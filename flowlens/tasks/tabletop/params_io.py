"""Parameters as a safe ``.npz``: the openpi tree flattened to ``"a/b/c"`` keys, no pickle.

``save_params`` writes ``numpy.savez_compressed`` of the flattened tree; ``load_params_npz``
reads it back with ``allow_pickle=False`` (loading runs no code) and rebuilds the nested dict.
The keys are openpi's parameter paths (``PaliGemma/llm/layers/attn/q_einsum/w``, ...), so
:func:`flowlens.model.checkpoint.save_openpi_checkpoint` can write the same tree in openpi's
orbax layout.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping

import numpy as np

from flowlens.errors import FlowlensError


def flatten(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dict → ``{"a/b/c": array}``."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "/"))
        else:
            out[key] = np.asarray(v)
    return out


def unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    """``{"a/b/c": array}`` → nested dict."""
    tree: dict = {}
    for key, v in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


def save_params(params: Mapping, path: str | os.PathLike, dtype=np.float32) -> pathlib.Path:
    """Write the tree to ``path`` (.npz, compressed) with leaves cast to ``dtype``."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **{k: np.asarray(v, dtype=dtype) for k, v in flatten(params).items()})
    return path


def load_params_npz(path: str | os.PathLike) -> dict:
    """Read a tree written by :func:`save_params` (``allow_pickle=False``)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FlowlensError(f"parameter file {str(path)!r} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as data:
            flat = {k: data[k] for k in data.files}
    except (ValueError, OSError) as e:
        raise FlowlensError(f"{path} is not a flowlens parameter .npz ({e}).") from None
    return unflatten(flat)
