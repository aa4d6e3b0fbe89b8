"""Normalisation statistics of an openpi checkpoint, and the (un)normalisation openpi applies.

An openpi checkpoint ships ``assets/<asset_id>/norm_stats.json`` (for LIBERO the asset id is
``physical-intelligence/libero``, so the file sits two folders down)::

    {"norm_stats": {"state":   {"mean": [...], "std": [...], "q01": [...], "q99": [...]},
                    "actions": {...}}}

Pi0 uses z-scores, Pi0.5 (and FAST) quantiles (fact sheet §4.1, ``transforms.py``):

* z-score: ``(x - mean) / (std + 1e-6)``; inverse ``x * (std + 1e-6) + mean``;
* quantile: ``(x - q01) / (q99 - q01 + 1e-6) * 2 - 1``; inverse ``(x + 1) / 2 * (q99 - q01 + 1e-6) + q01``.

As in openpi, normalising uses the first ``x.shape[-1]`` entries of the stats, and
unnormalising a wider (padded) vector leaves the extra dimensions alone (z-score pads mean 0,
std 1; quantile passes them through). The file is plain JSON: reading it runs no code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping

import numpy as np

from flowlens.errors import FlowlensError, unknown_name_error

NORM_STATS_FILE = "norm_stats.json"


@dataclasses.dataclass(frozen=True, eq=False)
class NormStats:
    """Per-dimension statistics of one quantity (state or actions).

    Attributes:
      mean: float [d].
      std: float [d].
      q01: float [d] 1st percentile, or None.
      q99: float [d] 99th percentile, or None.
    """

    mean: np.ndarray
    std: np.ndarray
    q01: np.ndarray | None = None
    q99: np.ndarray | None = None

    def to_dict(self) -> dict:
        return {
            k: (None if v is None else np.asarray(v).tolist()) for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, d: Mapping, *, where: str = "norm stats") -> NormStats:
        if not isinstance(d, Mapping) or "mean" not in d or "std" not in d:
            raise FlowlensError(
                f"{where} must map 'mean', 'std' (and optionally 'q01', 'q99') to lists, "
                f"got {type(d).__name__} with keys {sorted(d) if isinstance(d, Mapping) else '-'}."
            )
        arr = {
            k: (None if d.get(k) is None else np.asarray(d[k], dtype=np.float64))
            for k in ("mean", "std", "q01", "q99")
        }
        return cls(**arr)


def _check_quantiles(stats: NormStats) -> None:
    if stats.q01 is None or stats.q99 is None:
        raise FlowlensError(
            "quantile normalisation (Pi0.5) needs q01 and q99 in the norm stats, but they are missing; "
            "recompute the stats with quantiles or pass quantile=False."
        )


def normalize(x: np.ndarray, stats: NormStats, *, quantile: bool) -> np.ndarray:
    """Normalise ``x`` [..., d] with the first d entries of ``stats`` (openpi's ``Normalize``).

    Args:
      x: raw values, float [..., d].
      stats: the quantity's statistics (at least d entries).
      quantile: quantile normalisation to [-1, 1] (Pi0.5) instead of z-scores (Pi0).
    """
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[-1]
    if stats.mean.shape[-1] < d:
        raise FlowlensError(
            f"x has {d} dims but the norm stats only {stats.mean.shape[-1]}; pass the "
            "unpadded vector (pad after normalising)."
        )
    if quantile:
        _check_quantiles(stats)
        q01, q99 = stats.q01[..., :d], stats.q99[..., :d]
        return (x - q01) / (q99 - q01 + 1e-6) * 2.0 - 1.0
    return (x - stats.mean[..., :d]) / (stats.std[..., :d] + 1e-6)


def unnormalize(x: np.ndarray, stats: NormStats, *, quantile: bool) -> np.ndarray:
    """Invert :func:`normalize` (openpi's ``Unnormalize``); extra dims beyond the stats pass through
    (quantile) or are treated as mean 0, std 1 (z-score)."""
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[-1]
    k = stats.mean.shape[-1]
    if quantile:
        _check_quantiles(stats)
        q01, q99 = stats.q01[..., :d], stats.q99[..., :d]
        kk = q01.shape[-1]
        head = (x[..., :kk] + 1.0) / 2.0 * (q99 - q01 + 1e-6) + q01
        return np.concatenate([head, x[..., kk:]], axis=-1)
    mean = np.concatenate([stats.mean[..., :d], np.zeros(max(0, d - k))])
    std = np.concatenate([stats.std[..., :d], np.ones(max(0, d - k))])
    return x * (std + 1e-6) + mean


def find_norm_stats(checkpoint: str | os.PathLike, asset_id: str | None = None) -> pathlib.Path | None:
    """The ``norm_stats.json`` of a checkpoint directory, or None when it has none.

    Args:
      checkpoint: the checkpoint directory (the one holding ``params/`` and ``assets/``); its
        ``params`` subfolder is accepted too.
      asset_id: e.g. "physical-intelligence/libero"; None picks the only one present.

    Raises:
      FlowlensError: ``asset_id`` not present, or several present and none chosen.
    """
    root = pathlib.Path(checkpoint).expanduser()
    if root.name == "params" and not (root / "assets").is_dir():
        root = root.parent
    assets = root / "assets"
    if not assets.is_dir():
        return None
    found = {str(p.parent.relative_to(assets)): p for p in sorted(assets.rglob(NORM_STATS_FILE))}
    if asset_id is not None:
        if asset_id not in found:
            raise unknown_name_error("asset_id", asset_id, sorted(found))
        return found[asset_id]
    if not found:
        return None
    if len(found) > 1:
        raise FlowlensError(
            f"{assets} holds norm stats for several assets {sorted(found)}; pass asset_id=... ."
        )
    return next(iter(found.values()))


def load_norm_stats(path: str | os.PathLike, asset_id: str | None = None) -> dict[str, NormStats]:
    """Read openpi norm stats from a ``norm_stats.json`` file, its folder, or a checkpoint directory.

    Returns:
      quantity name ("state", "actions") → NormStats.

    Raises:
      FlowlensError: no stats found, or a file that is not openpi's format.
    """
    p = pathlib.Path(path).expanduser()
    if p.is_dir() and (p / NORM_STATS_FILE).is_file():
        p = p / NORM_STATS_FILE
    elif p.is_dir():
        found = find_norm_stats(p, asset_id)
        if found is None:
            raise FlowlensError(
                f"no {NORM_STATS_FILE} under {p} (looked in {p}/assets/<asset_id>/); pass the "
                "file's path, or run without normalisation."
            )
        p = found
    if not p.is_file():
        raise FlowlensError(
            f"norm stats path {str(path)!r} does not exist; expected a {NORM_STATS_FILE} file or "
            "a checkpoint directory with assets/<asset_id>/norm_stats.json."
        )
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FlowlensError(f"{p} is not valid JSON ({e}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("norm_stats"), dict):
        raise FlowlensError(
            f"{p} must hold {{'norm_stats': {{'state': {{...}}, 'actions': {{...}}}}}} "
            f"(openpi's format); found top-level keys {sorted(data) if isinstance(data, dict) else '-'}."
        )
    return {k: NormStats.from_dict(v, where=f"{p}: norm_stats[{k!r}]") for k, v in data["norm_stats"].items()}


def save_norm_stats(stats: Mapping[str, NormStats], directory: str | os.PathLike) -> pathlib.Path:
    """Write ``directory/norm_stats.json`` in openpi's format; returns the file path."""
    d = pathlib.Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / NORM_STATS_FILE
    path.write_text(json.dumps({"norm_stats": {k: v.to_dict() for k, v in stats.items()}}, indent=2))
    return path


__all__ = ["NormStats", "find_norm_stats", "load_norm_stats", "normalize", "save_norm_stats", "unnormalize"]
