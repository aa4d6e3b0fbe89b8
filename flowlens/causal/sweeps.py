"""Knockout sweeps: many edge knockouts over many frames, one tidy row per frame × intervention.

An *intervention* is a named Knockout or list of Knockouts (:mod:`flowlens.model.knockout`:
query ↛ key edges in chosen layers, heads and passes). :func:`edge_knockouts` spells the usual
families — sliding layer windows, single heads, chosen denoising steps — and
:func:`knockout_sweep` runs each over every frame, batched (frames with the same token layout
share a call, because knockout token sets resolve on one layout and prompt), with the same noise as the
unedited run, and reports per frame the effect on the action chunk (:mod:`flowlens.causal.effects`)
plus whatever a task ``score`` measures (e.g. :func:`flowlens.causal.tabletop.heading_score`).

Example::

    kos = edge_knockouts("actions", "words", windows=sliding_windows(18, 3, 3))
    table = knockout_sweep(model, params, frames, kos)   # frame, intervention, l2, cosine, ...
    table.groupby("intervention").l2.mean()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from flowlens.causal.batching import check_frames, frame_noise, layout_key, sample_frames
from flowlens.causal.effects import action_effects
from flowlens.errors import FlowlensError
from flowlens.model.knockout import Knockout

Score = Callable[[np.ndarray, np.ndarray], Mapping[str, np.ndarray]]


def sliding_windows(num_layers: int, width: int, stride: int = 1) -> list[range]:
    """Layer windows ``range(lo, lo + width)`` for lo = 0, stride, … while the window fits, e.g.
    ``sliding_windows(6, 3, 3)`` → ``[range(0, 3), range(3, 6)]``."""
    if not 1 <= width <= num_layers or stride < 1:
        raise FlowlensError(f"sliding_windows needs 1 <= width <= num_layers ({num_layers}) and stride >= 1, "
                            f"got width={width}, stride={stride}.")
    return [range(lo, lo + width) for lo in range(0, num_layers - width + 1, stride)]


def _span(layers) -> str:
    layers = list(layers)
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"L{layers[0]}-{layers[-1]}" if len(layers) > 1 else f"L{layers[0]}"
    return "L" + ",".join(str(x) for x in layers)


def edge_knockouts(query, key, *, windows: Sequence | None = None, heads: Sequence[int] | None = None,
                   steps: Sequence | None = None) -> dict[str, Knockout]:
    """The knockouts query ↛ key for every (layer window × single head × step choice).

    Args:
      query, key: token selections (as ``Knockout``).
      windows: layer sets (e.g. :func:`sliding_windows`); None: one entry with every layer.
      heads: single heads to try one by one; None: all heads together.
      steps: pass choices to try one by one, each a ``Knockout.steps`` value (an int, "prefix", or
        a tuple of them); None: every pass.

    Returns:
      name → Knockout, names like ``"L3-5/h2/s4"`` (parts left out when not swept; ``"all"`` when
      nothing is swept).
    """
    out: dict[str, Knockout] = {}
    for w in [None] if windows is None else windows:
        for h in [None] if heads is None else heads:
            for s in [None] if steps is None else steps:
                s = (s,) if isinstance(s, (int, str)) else s
                parts = [] if w is None else [_span(w)]
                parts += [] if h is None else [f"h{int(h)}"]
                parts += [] if s is None else ["s" + ",".join(str(x) for x in s)]
                out["/".join(parts) or "all"] = Knockout(query, key, layers=w, heads=None if h is None else [h],
                                                        steps=s)
    return out


def knockout_sweep(model, params, frames, interventions: Mapping[str, Knockout | Sequence[Knockout]], *,
                   noise: np.ndarray | None = None, seed: int = 0, num_steps: int | None = None,
                   batch_size: int = 16, score: Score | None = None, empty_rows: str = "keep_self") -> pd.DataFrame:
    """Run every intervention over every frame; one row per frame × intervention.

    Args:
      model, params: the policy.
      frames: batch-1 Observations.
      interventions: name → Knockout or list of Knockouts (an empty list: the unedited model).
      noise: float32 [F, H_a, action_dim] (default: ``normal(key(seed))``, frame i → row i); the
        unedited and every edited run of a frame share it.
      num_steps: denoising steps (default the model's).
      batch_size: frames per sampler call (frames with different layouts never share one).
      score: optional ``score(frame_indices int [b], actions [b, H_a, A]) → {name: [b]}`` (a task's
        measure); its columns appear for the edited run and, prefixed ``base_``, the unedited run.

    Returns:
      DataFrame with columns frame, intervention, l2, cosine, score columns, base_ score columns.

    Raises:
      FlowlensError: no frames, a frame that is not batch-1, bad noise, a bad knockout (unknown
        selection, layer / head / step out of range).
    """
    frames = check_frames(frames, "frames")
    if not isinstance(interventions, Mapping) or not interventions:
        raise FlowlensError("interventions must be a non-empty mapping name → Knockout or list of Knockouts, "
                            f"got {type(interventions).__name__}; e.g. edge_knockouts('actions', 'words').")
    noise = frame_noise(model.config, len(frames), noise=noise, seed=seed)
    keys = [layout_key(model.layout(o, 0)) for o in frames]
    names = ["__base__"] + list(interventions)
    actions = {}
    for name in names:
        kos = [] if name == "__base__" else interventions[name]
        kos = [kos] if isinstance(kos, Knockout) else kos
        actions[name], _ = sample_frames(model, params, frames, noise, kos, batch_size=batch_size, keys=keys,
                                         num_steps=num_steps, empty_rows=empty_rows)
    idx = np.arange(len(frames))
    base_scores = {} if score is None else dict(score(idx, actions["__base__"]))
    rows = []
    for name in interventions:
        eff = action_effects(actions["__base__"], actions[name])
        cols = {"frame": idx, "intervention": name, **eff}
        if score is not None:
            cols.update({k: np.asarray(v) for k, v in score(idx, actions[name]).items()})
            cols.update({f"base_{k}": np.asarray(v) for k, v in base_scores.items()})
        rows.append(pd.DataFrame(cols))
    return pd.concat(rows, ignore_index=True)
