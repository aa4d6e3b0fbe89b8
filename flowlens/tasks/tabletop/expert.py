"""The scripted expert and the episode it produces: frames, masks, robot state, action chunks.

The robot is a point gripper at ``(x, y, z)`` with an opening ``g`` (0 open, 1 closed). The
expert moves at a bounded speed (``SPEED_XY`` in the plane, ``SPEED_Z`` vertically) through the
phases reach → descend → grasp → lift → transport → lower → release → retreat: it goes above
the named source object, grasps it, carries it above the target and lets it go there.

Robot state (float32 [4]): ``(x, y, z, g)``. Action (float32 [4]) at frame t:
``(x_{t+1} - x_t, y_{t+1} - y_t, z_{t+1} - z_t, g_{t+1})``: a position delta and an absolute
gripper command. An action chunk of horizon H at frame t is actions t … t+H-1 (like
``pi05_libero``, H = 10); past the end of the episode it repeats "stay, keep the gripper".

Example::

    ep = run_expert(sample_scene(3))
    ep.frames["base_0_rgb"].shape   # (T, 144, 192, 3)
    ep.action_chunk(0).shape        # (10, 4)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from flowlens.errors import FlowlensError
from flowlens.tasks.tabletop.render import (
    TABLE_RGB,
    base_camera,
    boxes_from_masks,
    masks_from_ids,
    render,
    wrist_camera,
)
from flowlens.tasks.tabletop.scene import PICKABLE, TABLE_RGB_JITTER, Scene

SPEED_XY = 0.06  # table units per step
SPEED_Z = 0.04
HOVER_Z = 0.15
GRASP_Z = 0.03
PLACE_Z = 0.07
RETREAT_Z = 0.2
HORIZON = 10
STATE_DIM = 4
ACTION_DIM = 4
PHASES = ("reach", "descend", "grasp", "lift", "transport", "lower", "release", "retreat")
CAMERAS = ("base_0_rgb", "left_wrist_0_rgb")
PICK_KINDS = PICKABLE


@dataclasses.dataclass(frozen=True, eq=False)
class Episode:
    """One rollout of the expert (T frames).

    Attributes:
      scene: the scene and its prompt (the prompt names ``scene.source``).
      picked: the object the expert actually picked (== scene.source for a correct episode).
      states: float32 [T, 4] (x, y, z, g) at each frame.
      actions: float32 [T, 4] the action taken at each frame (see module docstring).
      phases: phase name per frame.
      object_xy: float32 [T, N, 2] object centres per frame (the picked one moves).
      frames: camera → uint8 [T, H, W, 3].
      masks: camera → bool [T, N, H, W] visible pixels of each object.
      boxes: camera → float32 [T, N, 4] (top, left, height, width) of each mask (zeros: hidden).
      success: the named source ends on the named target.
      carried: int [T] id of the object in (or just released from) the gripper, drawn on top; -1
        when none.
      lift: float32 [T] height of the carried object, 0–1 (it is drawn slightly larger).
    """

    scene: Scene
    picked: int
    states: np.ndarray
    actions: np.ndarray
    phases: tuple[str, ...]
    object_xy: np.ndarray
    frames: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    boxes: dict[str, np.ndarray]
    success: bool
    carried: np.ndarray
    lift: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.states.shape[0])

    def action_chunk(self, t: int, horizon: int = HORIZON) -> np.ndarray:
        """float32 [horizon, 4]: actions t … t+horizon-1, padded with "stay, keep the gripper"."""
        return chunk(self.actions, self.states, t, horizon)

    def render_frame(self, t: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """camera → (rgb uint8 [H, W, 3], ids uint8 [H, W]) of frame ``t`` (rendered on demand)."""
        carried = int(self.carried[t])
        return render_state(
            self.scene,
            self.states[t],
            self.object_xy[t],
            held=None if carried < 0 else carried,
            lift=float(self.lift[t]),
        )


def chunk(actions: np.ndarray, states: np.ndarray, t: int, horizon: int = HORIZON) -> np.ndarray:
    """Action chunk at frame ``t`` from per-frame ``actions`` [T, 4] and ``states`` [T, 4]."""
    n = actions.shape[0]
    if not 0 <= t < n:
        raise FlowlensError(f"frame t={t} out of range for an episode of {n} frames.")
    out = actions[t : t + horizon]
    if out.shape[0] < horizon:
        pad = np.zeros((horizon - out.shape[0], actions.shape[1]), np.float32)
        pad[:, 3] = states[-1, 3]
        out = np.concatenate([out, pad])
    return out.astype(np.float32)


def _step_towards(p: np.ndarray, goal: np.ndarray) -> np.ndarray:
    d = goal - p
    dxy = d[:2]
    nxy = float(np.hypot(*dxy))
    if nxy > SPEED_XY:
        dxy = dxy * (SPEED_XY / nxy)
    dz = float(np.clip(d[2], -SPEED_Z, SPEED_Z))
    return np.array([p[0] + dxy[0], p[1] + dxy[1], p[2] + dz])


def expert_states(scene: Scene, picked: int | None = None, max_steps: int = 120) -> tuple[np.ndarray, list[str]]:
    """The expert's gripper states.

    Args:
      scene: the scene.
      picked: object to pick (default ``scene.source``; another id makes a failure episode).
      max_steps: safety bound on the episode length.

    Returns:
      (states float32 [T, 4], phase name per state).
    """
    picked = scene.source if picked is None else picked
    src, tgt = scene.objects[picked], scene.target_object
    plan = [
        ("reach", (src.x, src.y, HOVER_Z), 0.0),
        ("descend", (src.x, src.y, GRASP_Z), 0.0),
        ("grasp", None, 1.0),
        ("lift", (src.x, src.y, HOVER_Z), 1.0),
        ("transport", (tgt.x, tgt.y, HOVER_Z), 1.0),
        ("lower", (tgt.x, tgt.y, PLACE_Z), 1.0),
        ("release", None, 0.0),
        ("retreat", (tgt.x, tgt.y, RETREAT_Z), 0.0),
    ]
    p, g = np.asarray(scene.start, float), 0.0
    states, phases = [], []
    for phase, goal, grip in plan:
        if goal is None:  # close / open the gripper in place over two steps
            for _ in range(2):
                states.append((*p, g))
                phases.append(phase)
                g = grip
            continue
        goal = np.asarray(goal, float)
        while np.max(np.abs(goal - p)) > 1e-6 and len(states) < max_steps:
            states.append((*p, g))
            phases.append(phase)
            p = _step_towards(p, goal)
            g = grip
    states.append((*p, g))
    phases.append("done")
    return np.asarray(states, np.float32), phases


def run_expert(scene: Scene, *, picked: int | None = None, render_frames: bool = True) -> Episode:
    """Roll the expert out in ``scene`` and render both cameras.

    Args:
      scene: the scene (its prompt names the source to pick).
      picked: the object the expert picks; None → the named source (a success). Any other id
        gives a failure episode (the wrong object ends on the target).
      render_frames: False skips rendering (frames, masks and boxes are empty dicts).

    Returns:
      Episode with T frames, T actions and per-frame masks and boxes for every object.
    """
    picked = scene.source if picked is None else int(picked)
    if not 0 <= picked < len(scene.objects):
        raise FlowlensError(f"picked={picked} is not an object id (0–{len(scene.objects) - 1}).")
    states, phases = expert_states(scene, picked)
    t_count = states.shape[0]
    actions = np.zeros((t_count, ACTION_DIM), np.float32)
    actions[:-1, :3] = states[1:, :3] - states[:-1, :3]
    actions[:-1, 3] = states[1:, 3]
    actions[-1, 3] = states[-1, 3]
    # the picked object follows the gripper from the end of the grasp until it is released
    xy = np.tile(np.array([[o.x, o.y] for o in scene.objects], np.float32), (t_count, 1, 1))
    held = np.zeros(t_count, bool)
    grasped = False
    for t in range(t_count):
        if phases[t] in ("lift", "transport", "lower") or (phases[t] == "release" and states[t, 3] > 0.5):
            grasped = True
        if grasped:
            xy[t, picked] = states[t, :2]
        held[t] = grasped and states[t, 3] > 0.5
    if grasped:
        final = xy[-1, picked]
        after = np.flatnonzero(~held & (np.arange(t_count) > np.argmax(held)))
        xy[after, picked] = final
    tgt = scene.target_object
    success = picked == scene.source and bool(np.hypot(*(xy[-1, picked] - (tgt.x, tgt.y))) < tgt.radius)
    carried = np.full(t_count, -1, np.int64)
    lift = np.zeros(t_count, np.float32)
    if grasped:
        first = int(np.argmax(held))
        carried[first:] = picked
        lift[held] = np.clip((states[held, 2] - GRASP_Z) / (HOVER_Z - GRASP_Z), 0, 1)
    ep = Episode(
        scene=scene,
        picked=picked,
        states=states,
        actions=actions,
        phases=tuple(phases),
        object_xy=xy,
        frames={},
        masks={},
        boxes={},
        success=success,
        carried=carried,
        lift=lift,
    )
    if render_frames:
        _render_episode(ep)
    return ep


def table_rgb(scene: Scene) -> tuple[int, int, int]:
    """The scene's table colour (a small seed-dependent variation of the base colour)."""
    if scene.seed is None:
        return TABLE_RGB
    jitter = np.random.default_rng([scene.seed, 7]).integers(-TABLE_RGB_JITTER, TABLE_RGB_JITTER + 1, 3)
    return tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(TABLE_RGB, jitter, strict=True))


def render_state(
    scene: Scene, state: np.ndarray, object_xy: np.ndarray, *, held: int | None = None, lift: float = 0.0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """camera → (rgb uint8 [H, W, 3], ids uint8 [H, W]) for one gripper state and object layout."""
    objs = [o.at(*object_xy[i]) for i, o in enumerate(scene.objects)]
    x, y, z, g = (float(v) for v in state)
    rgb = table_rgb(scene)
    return {
        cam.name: render(cam, objs, (x, y, z, g), held=held, lift=lift, table_rgb=rgb)
        for cam in (base_camera(), wrist_camera(x, y, z))
    }


def _render_episode(ep: Episode) -> None:
    n = len(ep.scene.objects)
    out = {c: ([], [], []) for c in CAMERAS}
    for t in range(ep.num_frames):
        for cam, (rgb, ids) in ep.render_frame(t).items():
            m = masks_from_ids(ids, n)
            out[cam][0].append(rgb)
            out[cam][1].append(m)
            out[cam][2].append(boxes_from_masks(m))
    for c, (f, m, b) in out.items():
        ep.frames[c], ep.masks[c], ep.boxes[c] = np.stack(f), np.stack(m), np.stack(b)
