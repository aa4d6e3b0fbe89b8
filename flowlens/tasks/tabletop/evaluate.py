"""Does the policy go for the object the prompt names? Held-out evaluation of a tabletop policy.

Evaluation frames come from expert episodes of held-out scenes (seeds from
:data:`~flowlens.tasks.tabletop.dataset.HELD_OUT_SEED`, never used in training), in the *reach*
phase while the gripper is still at least ``min_distance`` away from the named source, so the
expert's chunk heads for that object.

For a predicted chunk, the *heading* is the plane displacement of its first ``k`` actions. It
*points at* the object whose direction from the gripper has the largest cosine with the
heading. Reported:

* ``accuracy``: the heading points at the named object;
* ``chance``: the same for a uniformly random heading (averaged over the frames' geometry);
* ``mean_cosine``: cosine between heading and the direction to the named object;
* ``swap_accuracy``: with the prompt re-written to name *another* pickable object of the same
  scene (the frame unchanged), the heading points at the newly named object; ``swap_stays``:
  it still points at the originally named one. A policy that ignores language has swap accuracy
  near 1 − accuracy-like chance and ``swap_stays`` near ``accuracy``.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from flowlens.tasks.tabletop.dataset import HELD_OUT_SEED
from flowlens.tasks.tabletop.expert import PICK_KINDS, Episode, run_expert
from flowlens.tasks.tabletop.scene import sample_scene


@dataclasses.dataclass(frozen=True, eq=False)
class EvalCase:
    """One evaluation frame: episode ``episode`` at frame ``t``; ``swap`` is the object id a
    swapped prompt names (-1: the scene has no other pickable object)."""

    episode: Episode
    t: int
    swap: int

    @property
    def scene(self):
        return self.episode.scene


def held_out_cases(
    num_scenes: int, *, start: int = HELD_OUT_SEED, min_distance: float = 0.15, render_frames: bool = False
) -> list[EvalCase]:
    """One reach-phase frame per held-out scene (the first frame, when far enough from the source)."""
    cases = []
    seed = start
    while len(cases) < num_scenes:
        scene = sample_scene(seed)
        seed += 1
        ep = run_expert(scene, render_frames=render_frames)
        src = np.array([scene.source_object.x, scene.source_object.y])
        far = [
            t for t, ph in enumerate(ep.phases) if ph == "reach" and np.hypot(*(ep.states[t, :2] - src)) >= min_distance
        ]
        if not far:
            continue
        others = [
            i for i, o in enumerate(scene.objects) if i not in (scene.source, scene.target) and o.kind in PICK_KINDS
        ]
        swap = int(np.random.default_rng([scene.seed, 2]).choice(others)) if others else -1
        cases.append(EvalCase(ep, far[0], swap))
    return cases


def headings(chunks: np.ndarray, k: int = 5) -> np.ndarray:
    """float [N, H, 4] chunks → [N, 2] plane displacement of the first k actions."""
    return chunks[:, :k, :2].sum(axis=1)


def pointed_object(heading: np.ndarray, state: np.ndarray, object_xy: np.ndarray) -> int:
    """Id of the object whose direction from the gripper best matches ``heading`` [2]."""
    d = object_xy - state[None, :2]
    cos = d @ heading / (np.linalg.norm(d, axis=1) * np.linalg.norm(heading) + 1e-12)
    return int(np.argmax(cos))


def chance_of(state: np.ndarray, object_xy: np.ndarray, named: int, n_dirs: int = 720) -> float:
    """Fraction of uniformly spread headings that point at ``named``."""
    ang = np.linspace(0, 2 * np.pi, n_dirs, endpoint=False)
    dirs = np.stack([np.cos(ang), np.sin(ang)], 1)
    hits = [pointed_object(h, state, object_xy) == named for h in dirs]
    return float(np.mean(hits))


def _obs(case: EvalCase, prompt: str, tokenizer, config, stats):
    from flowlens.tasks.tabletop.policy import observe

    views = case.episode.render_frame(case.t)
    frames = {c: views[c][0] for c in config.cameras}
    return observe(frames, prompt, case.episode.states[case.t], tokenizer, config, stats)


def evaluate_policy(
    model,
    params,
    tokenizer,
    norm_stats,
    cases: list[EvalCase],
    *,
    k: int = 5,
    seed: int = 0,
    batch_size: int = 50,
    knockouts=None,
    swap: bool = True,
) -> dict:
    """Pointing accuracy, chance, mean cosine and (``swap``) the prompt-swap test over ``cases``;
    ``knockouts`` samples with those attention edges removed (see ``policy.predict_chunks``)."""
    from flowlens.tasks.tabletop.policy import predict_chunks

    cfg = model.config
    obs = [_obs(c, c.scene.prompt, tokenizer, cfg, norm_stats) for c in cases]
    chunks = predict_chunks(model, params, obs, norm_stats, seed=seed, batch_size=batch_size, knockouts=knockouts)
    hd = headings(chunks, k)
    hits, chance, cosines = [], [], []
    for c, h in zip(cases, hd, strict=True):
        st, xy = c.episode.states[c.t], c.episode.object_xy[c.t]
        hits.append(pointed_object(h, st, xy) == c.scene.source)
        chance.append(chance_of(st, xy, c.scene.source))
        d = xy[c.scene.source] - st[:2]
        cosines.append(float(d @ h / (np.linalg.norm(d) * np.linalg.norm(h) + 1e-12)))
    result = {
        "frames": len(cases),
        "k": k,
        "accuracy": float(np.mean(hits)),
        "chance": float(np.mean(chance)),
        "mean_cosine": float(np.mean(cosines)),
    }
    swapped = [c for c in cases if c.swap >= 0] if swap else []
    if swapped:
        obs2 = [_obs(c, c.scene.with_prompt(c.swap).prompt, tokenizer, cfg, norm_stats) for c in swapped]
        chunks2 = predict_chunks(model, params, obs2, norm_stats, seed=seed, batch_size=batch_size, knockouts=knockouts)
        hd2 = headings(chunks2, k)
        new, stays, ch2 = [], [], []
        for c, h in zip(swapped, hd2, strict=True):
            st, xy = c.episode.states[c.t], c.episode.object_xy[c.t]
            p = pointed_object(h, st, xy)
            new.append(p == c.swap)
            stays.append(p == c.scene.source)
            ch2.append(chance_of(st, xy, c.swap))
        result.update(
            swap_frames=len(swapped),
            swap_accuracy=float(np.mean(new)),
            swap_stays=float(np.mean(stays)),
            swap_chance=float(np.mean(ch2)),
        )
    return result


def evaluate_run(out_dir: str | pathlib.Path, num_scenes: int = 100, **kwargs) -> dict:
    """Evaluate the ``params.npz`` of a training output directory on held-out scenes."""
    from flowlens.model.norm_stats import load_norm_stats
    from flowlens.model.pi0 import Pi0Model
    from flowlens.model.tokenizer import PaligemmaTokenizer
    from flowlens.tasks.tabletop.builtin import config_from_dict
    from flowlens.tasks.tabletop.params_io import load_params_npz

    out = pathlib.Path(out_dir)
    config = config_from_dict(json.loads((out / "config.json").read_text()))
    tokenizer = PaligemmaTokenizer(out / "tokenizer.model", max_len=config.max_token_len)
    stats = load_norm_stats(out / "norm_stats.json")
    params = load_params_npz(out / "params.npz")
    return evaluate_policy(Pi0Model(config), params, tokenizer, stats, held_out_cases(num_scenes), **kwargs)
