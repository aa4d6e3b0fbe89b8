"""Finding the episode a command means: a video, any ``open_episode`` path, or a LIBERO data tree.

A LIBERO rollout tree looks like ``<data-root>/<group>/videos/rollout_task<i>_ep<j>.mp4``;
``--episode-idx k`` is the k-th video of the group in (task, episode) order. Those file names carry
no instruction, so the prompt comes from ``--prompt`` or from a task list next to the videos:
``<data-root>/<group>/tasks.json`` (``{"0": "pick up ...", ...}`` or a list indexed by task) or
``tasks.jsonl`` (LeRobot style, one ``{"task_index": i, "task": "..."}`` per line).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from flowlens.errors import FlowlensError

_TASK_EP = re.compile(r"^rollout_task(\d+)_ep(\d+)\.mp4$")
TASK_FILES = ("tasks.json", "tasks.jsonl")


def _natural_key(path: Path):
    m = _TASK_EP.match(path.name)
    if m:
        return (0, int(m[1]), int(m[2]), path.name)
    return (1, 0, 0, path.name)


def group_videos(data_root: str | os.PathLike, group: str) -> list[Path]:
    """The rollout videos of ``<data_root>/<group>/videos`` (or ``<data_root>/<group>``), in (task,
    episode) order."""
    root = Path(os.path.expanduser(os.fspath(data_root)))
    if not root.is_dir():
        raise FlowlensError(f"--data-root {str(root)!r} does not exist or is not a folder.")
    gdir = root / str(group)
    if not gdir.is_dir():
        groups = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise FlowlensError(f"group {group!r} not found under {str(root)!r}; groups there: {groups}. Pass --group.")
    vdir = gdir / "videos" if (gdir / "videos").is_dir() else gdir
    videos = sorted((p for p in vdir.glob("*.mp4") if not p.name.startswith(".")), key=_natural_key)
    if not videos:
        raise FlowlensError(f"no .mp4 rollout videos in {str(vdir)!r}.")
    return videos


def read_task_prompts(folder: str | os.PathLike) -> dict[int, str] | None:
    """Task index → instruction from ``tasks.json`` / ``tasks.jsonl`` in ``folder`` (None if
    neither exists)."""
    folder = Path(folder)
    for name in TASK_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
            if name.endswith(".jsonl"):
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
                return {int(r["task_index"]): str(r["task"]) for r in rows}
            data = json.loads(text)
            if isinstance(data, list):
                return {i: str(t) for i, t in enumerate(data)}
            return {int(k): str(v) for k, v in data.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise FlowlensError(
                f"task list {str(path)!r} is not readable ({type(e).__name__}: {e}); expected "
                '{"0": "pick up ...", ...}, a JSON list, or JSON lines {"task_index": 0, "task": "..."}.'
            ) from None
    return None


def open_source(
    *,
    video: str | None = None,
    episode: str | None = None,
    data_root: str | None = None,
    group: str | None = None,
    episode_idx: int | None = None,
    prompt: str | None = None,
    success: bool | None = None,
    rotate180: bool = False,
):
    """Open the episode named by CLI-style arguments (exactly one of video / episode / data_root).

    Args:
      video: a rollout ``.mp4``.
      episode: any ``flowlens.io.open_episode`` spec (mp4, LeRobot root ``#i``, episode folder).
      data_root, group, episode_idx: a LIBERO rollout tree (see the module docstring).
      prompt: the instruction (overrides the source's own).
      rotate180: the stored frames are the raw render and the model saw them rotated by 180°.
    Returns:
      An ``EpisodeSource``.
    Raises:
      FlowlensError: missing files, an index out of range, no source given.
    """
    from flowlens.io.sources import open_episode

    given = [x for x in (video, episode, data_root) if x is not None]
    if len(given) != 1:
        raise FlowlensError(
            "name one episode: --video path/to/rollout.mp4, --episode <mp4 | LeRobot root#index | episode "
            "folder>, or --data-root DIR --group G --episode-idx K"
            + (f" (got {len(given)} of them)." if given else ".")
        )
    if data_root is not None:
        group = "90" if group is None else str(group)
        videos = group_videos(data_root, group)
        k = 0 if episode_idx is None else int(episode_idx)
        if not -len(videos) <= k < len(videos):
            raise FlowlensError(
                f"--episode-idx {k} out of range: group {group!r} under {str(data_root)!r} has {len(videos)} "
                f"episodes (valid: 0–{len(videos) - 1})."
            )
        spec: str | Path = videos[k]
    else:
        spec = os.path.expanduser(video if video is not None else episode)
        path = Path(spec)
        if video is not None and not path.is_file():
            near = sorted(p.name for p in path.parent.glob("*.mp4"))[:5] if path.parent.is_dir() else []
            what = "is a folder; pass an .mp4 file (or use --episode)" if path.is_dir() else "does not exist"
            hint = f"; videos in that folder: {near}" if near and not path.is_dir() else ""
            raise FlowlensError(f"video {str(path)!r} {what}{hint}. Check --video.")
        if not path.exists() and "#" not in spec:
            raise FlowlensError(f"episode {spec!r} does not exist. Check --episode.")
    kwargs = {}
    path = Path(spec)
    if path.suffix.lower() == ".mp4":
        kwargs["rotate180"] = rotate180
        tasks = read_task_prompts(path.parent)
        if tasks is None and path.parent.name == "videos":
            tasks = read_task_prompts(path.parent.parent)
        if tasks:
            kwargs["task_prompts"] = tasks
    elif rotate180:
        kwargs["rotate180"] = rotate180
    return open_episode(spec, prompt=prompt, success=success, **kwargs)


def source_prompt(source, flag: str = "--prompt") -> str:
    """The episode's instruction, or a FlowlensError that says which flag supplies it."""
    try:
        return source.prompt
    except FlowlensError:
        hint = ""
        if getattr(source, "task_index", None) is not None:
            hint = f" (or put a tasks.json mapping task {source.task_index} to its instruction next to the videos)"
        raise FlowlensError(
            f"episode {source.name!r} ({source.path}) has no prompt in its files; pass {flag} "
            f'"<the task instruction>"{hint}.'
        ) from None
