"""Writing tabletop episodes as flowlens episode folders, and the demo's success / failure pair.

An episode folder (:mod:`flowlens.io.sources.episode_dir`) holds one MP4 per camera
(``base_0_rgb.mp4`` 192×144, ``left_wrist_0_rgb.mp4`` 96×96), ``episode.json`` with the prompt,
the success flag, per-frame robot state and actions, per-frame object boxes, and ``masks.npz``
with per-frame object label images (label ``k`` = ``objects[k - 1]``, 0 = table / gripper). Each
camera's FrameTransform maps the stored frame to the tabletop model's 56×56 input, so reading the
episode back goes through the same letterbox / projection path as a LIBERO rollout.

``metadata`` carries the ground truth an analysis needs: the scene (objects with colour, kind,
position), the ids of the named source and target, the object the robot actually picked, the
seed and the phase of every frame.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from flowlens.core.frame import FrameTransform
from flowlens.errors import FlowlensError
from flowlens.tasks.tabletop.config import IMAGE_SIZE
from flowlens.tasks.tabletop.expert import CAMERAS, PICK_KINDS, Episode, run_expert
from flowlens.tasks.tabletop.scene import sample_scene

FPS = 10.0


def write_episode_dir(
    episode: Episode,
    path: str | os.PathLike,
    *,
    fps: float = FPS,
    lossless: bool = False,
    overwrite: bool = False,
    name: str | None = None,
) -> pathlib.Path:
    """Write a rendered Episode as a flowlens episode folder; returns its path.

    Args:
      episode: from :func:`~flowlens.tasks.tabletop.expert.run_expert` (with frames).
      path: the folder to create.
      fps: video frame rate.
      lossless: bit-exact RGB videos (larger files) instead of H.264 yuv420p.
      overwrite: replace an existing folder.
      name: stored episode name (default: the folder name).
    """
    from flowlens.io.sources.episode_dir import write_episode

    if not episode.frames:
        raise FlowlensError("the episode has no frames; create it with run_expert(scene, render_frames=True).")
    scene = episode.scene
    names = [o.name for o in scene.objects]
    labels = {}
    for cam in CAMERAS:
        m = episode.masks[cam]  # [T, N, H, W]
        lab = np.zeros(m.shape[:1] + m.shape[2:], np.uint8)
        for i in range(m.shape[1]):
            lab[m[:, i]] = i + 1
        labels[cam] = lab
    boxes = {
        cam: {
            names[i]: [None if not b[i].any() else tuple(float(x) for x in b[i]) for b in episode.boxes[cam]]
            for i in range(len(names))
        }
        for cam in CAMERAS
    }
    transforms = {cam: FrameTransform(episode.frames[cam].shape[1:3], (IMAGE_SIZE, IMAGE_SIZE)) for cam in CAMERAS}
    metadata = {
        "task": "flowlens tabletop",
        "scene": scene.to_dict(),
        "source": scene.source,
        "target": scene.target,
        "picked": episode.picked,
        "source_name": scene.source_object.name,
        "target_name": scene.target_object.name,
        "picked_name": scene.objects[episode.picked].name,
        "phases": list(episode.phases),
        "state_names": ["x", "y", "z", "gripper"],
        "action_names": ["dx", "dy", "dz", "gripper"],
        "mask_labels": "label k = objects[k-1]; 0 = table, floor or gripper",
        "model": "builtin:tabletop",
    }
    out = write_episode(
        path,
        {c: episode.frames[c] for c in CAMERAS},
        prompt=scene.prompt,
        fps=fps,
        success=episode.success,
        state=episode.states,
        actions=episode.actions,
        boxes=boxes,
        masks=labels,
        transforms=transforms,
        objects=names,
        lossless=lossless,
        overwrite=overwrite,
        metadata=metadata,
    )
    return pathlib.Path(out)


def failure_scene(seed: int):
    """The first scene from ``seed`` on with a pickable distractor of the source's kind.

    Returns:
      (scene, index of the distractor): ``run_expert(scene, picked=index)`` fails the prompt in a
      way that is easy to confuse with success; ``run_expert(scene)`` succeeds.
    """
    s = seed
    while True:
        scene = sample_scene(s)
        same = [
            i
            for i, o in enumerate(scene.objects)
            if i not in (scene.source, scene.target) and o.kind == scene.source_object.kind and o.kind in PICK_KINDS
        ]
        if same:
            return scene, same[0]
        s += 1


def generate_demo_episodes(
    out_dir: str | os.PathLike, seed: int = 0, *, overwrite: bool = True
) -> tuple[pathlib.Path, pathlib.Path]:
    """Write the demo's two episodes under ``out_dir``.

    * ``success``: the expert does what the prompt says (scene from ``seed``);
    * ``failure``: a scene with a distractor of the same kind as the named object (another
      colour), and the robot picks the distractor instead (``success: false`` in episode.json;
      ``metadata.picked`` names the wrong object).

    Returns:
      (success_episode_dir, failure_episode_dir).
    """
    out = pathlib.Path(out_dir)
    ok_ep = run_expert(sample_scene(seed))
    scene, wrong = failure_scene(seed + 1)
    bad_ep = run_expert(scene, picked=wrong)
    if not ok_ep.success or bad_ep.success:  # pragma: no cover - guaranteed by the expert
        raise FlowlensError("demo episodes came out with unexpected success flags.")
    ok = write_episode_dir(ok_ep, out / "tabletop_success", overwrite=overwrite)
    bad = write_episode_dir(bad_ep, out / "tabletop_failure", overwrite=overwrite)
    return ok, bad
