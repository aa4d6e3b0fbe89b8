"""``open_episode``: pick the episode source for a path, and ``list_episodes`` under a folder.

What a path means:

- a folder holding ``episode.json`` → a flowlens episode folder (``EpisodeDirSource``);
- a folder holding ``meta/info.json`` → a LeRobot v2 dataset (``episode=`` picks one, or write
  the path as ``"<root>#<episode index>"``);
- ``.../data/chunk-XXX/episode_XXXXXX.parquet`` inside a LeRobot dataset → that episode;
- a ``.mp4`` file → a rollout video (``Mp4RolloutSource``; prompt/outcome from the name).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from flowlens.errors import FlowlensError
from flowlens.io.sources.base import EpisodeSource
from flowlens.io.sources.episode_dir import EpisodeDirSource
from flowlens.io.sources.lerobot import LeRobotEpisodeSource, is_lerobot_root
from flowlens.io.sources.lerobot_v3 import lerobot_dataset_episodes, open_lerobot
from flowlens.io.sources.mp4 import Mp4RolloutSource

_EPISODE_FILE = re.compile(r"^episode_(\d+)\.parquet$")


def open_episode(
    path_or_spec: str | os.PathLike,
    *,
    prompt: str | None = None,
    episode: int | None = None,
    success: bool | None = None,
    **kwargs,
) -> EpisodeSource:
    """Open one episode from a path (see the module docstring for what a path may be).

    Args:
      path_or_spec: a path, or ``"<lerobot root>#<episode index>"``.
      prompt: the task instruction, overriding (or supplying) the source's own.
      episode: episode index inside a LeRobot dataset.
      success: outcome, overriding the source's own.
      kwargs: options of the chosen source (``task_prompts``, ``camera``, ``rotate180`` for MP4;
        ``columns``, ``rotate180`` for LeRobot).

    Returns:
      An EpisodeSource: ``len(src)``, ``src.frame(i)``, ``src.prompt``, ``src.success``, ``src.name``.
    """
    text = os.fspath(path_or_spec)
    path = Path(text)
    if not path.exists() and "#" in text:
        root, _, idx = text.rpartition("#")
        if not idx.strip().isdigit():
            raise FlowlensError(
                f"episode spec {text!r}: the part after '#' must be an episode index, got {idx!r}."
            )
        if episode is not None and episode != int(idx):
            raise FlowlensError(
                f"episode spec {text!r} names episode {idx} but episode={episode} was passed."
            )
        path, episode = Path(root), int(idx)
    if not path.exists():
        raise FlowlensError(f"episode path {str(path)!r} does not exist.")
    if path.is_dir():
        if (path / "episode.json").is_file():
            _no_episode(episode, path)
            return EpisodeDirSource(path, prompt=prompt, success=success, **kwargs)
        if is_lerobot_root(path):
            return open_lerobot(path, episode, prompt=prompt, success=success, **kwargs)
        raise FlowlensError(
            f"folder {str(path)!r} is neither a flowlens episode (no episode.json) nor a LeRobot v2 / v3 dataset "
            "(no meta/info.json). For a folder of videos or episodes use list_episodes(path)."
        )
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        _no_episode(episode, path)
        return Mp4RolloutSource(path, prompt=prompt, success=success, **kwargs)
    if suffix == ".parquet":
        m = _EPISODE_FILE.match(path.name)
        root = path.parent.parent.parent
        if m is None or not is_lerobot_root(root):
            raise FlowlensError(
                f"{str(path)!r} is not an episode file of a LeRobot v2 dataset (expected "
                "<root>/data/chunk-XXX/episode_XXXXXX.parquet with <root>/meta/info.json)."
            )
        return LeRobotEpisodeSource(root, int(m[1]), prompt=prompt, success=success, **kwargs)
    raise FlowlensError(
        f"cannot tell what kind of episode {str(path)!r} is: expected a .mp4 rollout video, a LeRobot v2 "
        "dataset folder or episode .parquet, or a flowlens episode folder (episode.json)."
    )


def _no_episode(episode, path: Path) -> None:
    if episode is not None:
        raise FlowlensError(
            f"episode={episode} only applies to LeRobot datasets; {str(path)!r} is one episode."
        )


def list_episodes(path: str | os.PathLike) -> list[str]:
    """Every episode under ``path``, as specs for ``open_episode``, in a deterministic order.

    A LeRobot root gives ``"<root>#<i>"`` per episode; a flowlens episode folder gives itself;
    any other folder is searched recursively for ``*.mp4`` rollouts and episode folders (videos
    inside an episode folder belong to it).
    """
    path = Path(path)
    if not path.exists():
        raise FlowlensError(f"episode path {str(path)!r} does not exist.")
    if path.is_file():
        return [str(path)]
    if (path / "episode.json").is_file():
        return [str(path)]
    if is_lerobot_root(path):
        return [f"{path}#{i}" for i in lerobot_dataset_episodes(path)]
    found = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        d = Path(dirpath)
        if "episode.json" in filenames:
            found.append(str(d))
            dirnames.clear()
            continue
        if (d / "meta" / "info.json").is_file():
            found += [f"{d}#{i}" for i in lerobot_dataset_episodes(d)]
            dirnames.clear()
            continue
        found += [
            str(d / f) for f in sorted(filenames) if f.lower().endswith(".mp4") and not f.startswith(".")
        ]
    return found
