"""The embedded tabletop task's score of an action chunk: does it head for the named object?

:func:`heading_score` builds the ``score`` callback of :func:`flowlens.causal.sweeps.knockout_sweep`
and :func:`flowlens.causal.patching.patch_sweep` for held-out evaluation cases
(:func:`flowlens.tasks.tabletop.evaluate.held_out_cases`): model-space chunks are unnormalised to
task space, the heading is the plane displacement of the first ``k`` actions
(:func:`~flowlens.tasks.tabletop.evaluate.headings`) and it *hits* when it points at the named
object (:func:`~flowlens.tasks.tabletop.evaluate.pointed_object`) — the numbers of
``evaluate_policy``, per frame. :func:`load_task` and :func:`case_frames` give the embedded
model and the frames of evaluation cases (optionally with other prompts, or a later frame of the
same episode as a corrupted input for patching); :func:`swapped_prompt` re-writes a case's prompt to
name another object in the same words (the prompt-swap corruption).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flowlens.errors import FlowlensError


def heading_score(cases: Sequence, norm_stats, config, *, k: int = 5, named: Sequence[int] | None = None):
    """``score(frames [b], actions [b, H, A]) → {"hit", "miss", "cosine_named", "chance"}`` per frame.

    Args:
      cases: the frames' EvalCases (frame i ↔ cases[i]).
      norm_stats: the task's norm stats ("actions" unnormalises the chunk).
      config: the model's Pi0Config (Pi0.5 configs unnormalise with quantiles).
      k: actions summed into the heading.
      named: per frame the object id that counts as a hit (default each scene's named source; for
        swapped prompts pass ``[c.swap for c in cases]``).
    """
    from flowlens.model.norm_stats import unnormalize
    from flowlens.tasks.tabletop.evaluate import chance_of, headings, pointed_object
    from flowlens.tasks.tabletop.expert import ACTION_DIM

    cases = list(cases)
    named = [c.scene.source for c in cases] if named is None else [int(x) for x in named]
    if len(named) != len(cases):
        raise FlowlensError(f"named has {len(named)} entries for {len(cases)} cases; pass one object id per case.")

    def score(frames: np.ndarray, actions: np.ndarray) -> dict[str, np.ndarray]:
        chunks = unnormalize(np.asarray(actions)[..., :ACTION_DIM], norm_stats["actions"], quantile=config.pi05)
        hd = headings(chunks.astype(np.float32), k)
        hit, cos, chance = [], [], []
        for f, h in zip(frames, hd, strict=True):
            c = cases[int(f)]
            st, xy = c.episode.states[c.t], c.episode.object_xy[c.t]
            hit.append(pointed_object(h, st, xy) == named[f])
            d = xy[named[f]] - st[:2]
            cos.append(float(d @ h / (np.linalg.norm(d) * np.linalg.norm(h) + 1e-12)))
            chance.append(chance_of(st, xy, named[f]))
        hit = np.asarray(hit)
        return {"hit": hit, "miss": ~hit, "cosine_named": np.asarray(cos), "chance": np.asarray(chance)}

    return score


def swapped_prompt(case) -> str:
    """The prompt of ``case``'s scene re-written to name ``case.swap`` instead of its named object,
    in the scene's own template (so the token layout stays aligned when object names have equal
    token counts: the corrupted input of a prompt-swap patch)."""
    from flowlens.tasks.tabletop.scene import TEMPLATES

    scene = case.scene
    if case.swap < 0:
        raise FlowlensError(f"scene {scene.seed} has no other pickable object to swap in (case.swap = -1); "
                            "keep cases with case.swap >= 0.")
    same = [t for t in range(len(TEMPLATES)) if scene.with_prompt(scene.source, template=t).prompt == scene.prompt]
    return scene.with_prompt(case.swap, template=same[0] if same else 0).prompt


def load_task(name: str = "tabletop"):
    """The embedded policy: (Pi0Model, params, tokenizer, norm stats)."""
    from flowlens.model.pi0 import Pi0Model
    from flowlens.tasks.tabletop.builtin import load_builtin, load_builtin_norm_stats

    config, params, tokenizer = load_builtin(name)
    return Pi0Model(config), params, tokenizer, load_builtin_norm_stats(name)


def case_frames(cases: Sequence, tokenizer, config, norm_stats, *, prompts: Sequence[str] | None = None,
                offset: int = 0) -> list:
    """Batch-1 Observations of the cases' frames (frame ``t + offset`` of each episode), prompted
    with each scene's own prompt or ``prompts`` (one per case)."""
    from flowlens.tasks.tabletop.evaluate import EvalCase, _obs

    cases = list(cases)
    prompts = [c.scene.prompt for c in cases] if prompts is None else list(prompts)
    if len(prompts) != len(cases):
        raise FlowlensError(f"prompts has {len(prompts)} entries for {len(cases)} cases; pass one per case.")
    for c in cases:
        if not 0 <= c.t + offset < len(c.episode.states):
            last = len(c.episode.states) - 1
            raise FlowlensError(f"offset {offset} leaves episode {c.scene.seed} (frames 0–{last}) at frame {c.t}; "
                                "pick a smaller offset.")
    return [_obs(EvalCase(c.episode, c.t + offset, c.swap), p, tokenizer, config, norm_stats)
            for c, p in zip(cases, prompts, strict=True)]
