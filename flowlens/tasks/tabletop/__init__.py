"""The tabletop task and the embedded default model ``builtin:tabletop``.

A synthetic pick-and-place task with known ground truth: objects named by colour and kind on a
table seen by a base and a wrist camera, prompts naming a source and a target object, a scripted
expert producing Pi0-style action chunks, and per-frame object masks and boxes. A tiny Pi0 of
the real architecture (18 layers, 8 query heads sharing 1 key/value head) trained on it ships
with flowlens, so every analysis runs out of the box and can be checked against the truth.

Modules: ``scene`` (objects, prompts), ``render`` (cameras, masks), ``expert`` (trajectories,
action chunks), ``episodes`` (flowlens episode folders, demo pair), ``tokenizer``, ``config``,
``dataset``, ``train`` (``python -m flowlens.tasks.tabletop.train``), ``builtin`` (loading the
shipped model), ``policy`` and ``evaluate`` (held-out pointing tests).
"""

from flowlens.tasks.tabletop.builtin import is_builtin as is_builtin
from flowlens.tasks.tabletop.builtin import load_builtin as load_builtin
from flowlens.tasks.tabletop.builtin import load_builtin_checkpoint as load_builtin_checkpoint
from flowlens.tasks.tabletop.builtin import load_builtin_norm_stats as load_builtin_norm_stats
from flowlens.tasks.tabletop.config import tabletop_config as tabletop_config
from flowlens.tasks.tabletop.episodes import generate_demo_episodes as generate_demo_episodes
from flowlens.tasks.tabletop.episodes import write_episode_dir as write_episode_dir
from flowlens.tasks.tabletop.expert import Episode as Episode
from flowlens.tasks.tabletop.expert import run_expert as run_expert
from flowlens.tasks.tabletop.scene import Scene as Scene
from flowlens.tasks.tabletop.scene import TableObject as TableObject
from flowlens.tasks.tabletop.scene import sample_scene as sample_scene

__all__ = [
    "Episode",
    "Scene",
    "TableObject",
    "generate_demo_episodes",
    "is_builtin",
    "load_builtin",
    "load_builtin_checkpoint",
    "load_builtin_norm_stats",
    "run_expert",
    "sample_scene",
    "tabletop_config",
    "write_episode_dir",
]
