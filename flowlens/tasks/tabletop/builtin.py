"""The embedded default model: ``builtin:tabletop``, a tiny Pi0.5 trained on the tabletop task.

Shipped under ``flowlens/assets/tabletop/``::

    tokenizer.model     SentencePiece model (72 pieces; PaliGemma's special ids)
    params.npz          weights, openpi parameter paths as "a/b/c" keys (numpy, no pickle)
    config.json         the Pi0Config (:func:`flowlens.tasks.tabletop.config.tabletop_config`)
    norm_stats.json     openpi-format stats (mean, std, q01, q99) of state and actions
    training.json       how it was trained (steps, time, loss, held-out accuracy)

Everything is read as data (JSON, a numpy archive with ``allow_pickle=False``, a SentencePiece
protobuf): loading runs no code from the files.

Example::

    config, params, tokenizer = load_builtin("tabletop")          # or "builtin:tabletop"
    stats = load_builtin_norm_stats("tabletop")
    obs = make_observation(frames, "put the red cube in the blue bowl", state, tokenizer, config,
                           norm_stats=stats)
    actions, capture = sample_actions(Pi0Model(config), params, obs, rng=key, capture=CaptureConfig())

The model reads the two cameras and the prompt, not the state (see ``config``): ``state`` must be
a finite 4-vector but any value gives the same actions.
"""

from __future__ import annotations

import json
import pathlib

from flowlens.errors import FlowlensError, unknown_name_error
from flowlens.model.config import GemmaConfig, Pi0Config, SiglipConfig

PREFIX = "builtin:"
ASSETS = pathlib.Path(__file__).resolve().parents[2] / "assets"
BUILTIN_NAMES = ("tabletop",)


def config_from_dict(d: dict) -> Pi0Config:
    """Inverse of ``dataclasses.asdict`` for a Pi0Config read from JSON."""
    try:
        d = dict(d)
        d["paligemma"] = GemmaConfig(**d["paligemma"])
        d["action_expert"] = GemmaConfig(**d["action_expert"])
        d["siglip"] = SiglipConfig(**d["siglip"])
        d["cameras"] = tuple(d["cameras"])
        return Pi0Config(**d)
    except (KeyError, TypeError) as e:
        raise FlowlensError(f"not a Pi0Config dictionary ({type(e).__name__}: {e}).") from None


def parse_builtin(name: str) -> str:
    """``"builtin:tabletop"`` or ``"tabletop"`` → ``"tabletop"``; FlowlensError for unknown names."""
    if not isinstance(name, str):
        raise FlowlensError(f"builtin model name must be a str, got {type(name).__name__}.")
    bare = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    if bare not in BUILTIN_NAMES:
        raise unknown_name_error("builtin model", name, [PREFIX + n for n in BUILTIN_NAMES])
    return bare


def is_builtin(name: object) -> bool:
    """True for strings of the form ``"builtin:<name>"``."""
    return isinstance(name, str) and name.startswith(PREFIX)


def builtin_dir(name: str = "tabletop") -> pathlib.Path:
    """The asset directory of a builtin model (it also works as a norm-stats directory)."""
    d = ASSETS / parse_builtin(name)
    missing = [f for f in ("tokenizer.model", "params.npz", "config.json", "norm_stats.json") if not (d / f).is_file()]
    if missing:
        raise FlowlensError(
            f"builtin model {name!r} is incomplete: {missing} missing in {d}. Re-create it with "
            "`python -m flowlens.tasks.tabletop.train --ship`."
        )
    return d


def load_builtin(name: str = "tabletop"):
    """Load a builtin model.

    Args:
      name: "tabletop" or "builtin:tabletop".

    Returns:
      ``(config, params, tokenizer)``: the Pi0Config, the parameter tree (nested dict of float32
      numpy arrays, openpi paths) and a :class:`~flowlens.model.tokenizer.PaligemmaTokenizer`
      with ``max_len = config.max_token_len``. Norm stats: :func:`load_builtin_norm_stats`.

    Raises:
      FlowlensError: unknown name or missing assets.
    """
    from flowlens.model.checkpoint import check_params
    from flowlens.model.tokenizer import PaligemmaTokenizer
    from flowlens.tasks.tabletop.params_io import load_params_npz

    d = builtin_dir(name)
    config = config_from_dict(json.loads((d / "config.json").read_text()))
    params = check_params(load_params_npz(d / "params.npz"), config, strict=True)
    tokenizer = PaligemmaTokenizer(d / "tokenizer.model", max_len=config.max_token_len)
    return config, params, tokenizer


def load_builtin_norm_stats(name: str = "tabletop"):
    """The builtin model's norm stats: "state" / "actions" → NormStats (4 dims; Pi0.5 uses the quantiles)."""
    from flowlens.model.norm_stats import load_norm_stats

    return load_norm_stats(builtin_dir(name) / "norm_stats.json")


def load_builtin_checkpoint(name: str = "tabletop"):
    """The builtin model as a :class:`flowlens.model.checkpoint.Checkpoint` (params, config,
    norm_stats, path), for code paths written for openpi checkpoints. The tokenizer comes from
    :func:`load_builtin`."""
    from flowlens.model.checkpoint import Checkpoint

    config, params, _ = load_builtin(name)
    return Checkpoint(params=params, config=config, norm_stats=load_builtin_norm_stats(name), path=builtin_dir(name))


def training_info(name: str = "tabletop") -> dict:
    """The shipped ``training.json`` (steps, time, loss, held-out accuracy), or {} when absent."""
    p = ASSETS / parse_builtin(name) / "training.json"
    return json.loads(p.read_text()) if p.is_file() else {}
