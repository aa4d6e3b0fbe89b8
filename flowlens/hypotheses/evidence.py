"""Evidence: what a hypothesis's statistic may ask of one frame — labels, a capture, the layout, interventions.

An ``Evidence`` wraps one frame (an episode ``Frame``, or a ready ``Observation``) and the backend
that runs it (``flowlens.pipeline.load_backend``: a checkpoint, ``builtin:tabletop``, or
``synthetic``). Everything is computed lazily, on first request, and kept on the object:

- ``ev.labels``: per-frame labels (episode, frame, success, prompt, anything the caller adds);
- ``ev.capture(config)``: the attention capture for a ``CaptureConfig`` (default: every valid
  row of the prefix pass and denoising step 0, heads averaged); ``ev.graph(step)`` its TokenGraph;
- ``ev.layout``: the TokenLayout (without running the model where the backend can tell);
- ``ev.actions(knockouts)``: the action chunk, float32 [H, action_dim] (unnormalised with the
  checkpoint's norm stats when it has them), sampled from this frame's own fixed noise, so the
  clean run (``knockouts=()``) and every intervention differ only by the intervention;
- ``ev.patched(source, site)``: the chunk with one activation (``flowlens.causal.PatchSite``)
  patched in from ``source``'s run (a corrupted input: a swapped prompt, another frame), same noise.

``prefetch_actions(evidences, knockouts)`` samples one intervention for many frames in batches,
through the interventions' one batched sampler (``flowlens.causal.batching.sample_frames``):
frames with the same token layout and prompt share one sampler call (knockouts resolve on one
layout per call, word selections on its prompt), padded to a power-of-two batch;
``prefetch_patched(evidences, sources, sites)`` does the same for patches
(``flowlens.causal.patching.patch_frames``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

from flowlens.errors import FlowlensError

DEFAULT_BATCH = 32


def _default_config():
    from flowlens.model import CaptureConfig

    return CaptureConfig(steps=(0,), query_rows="valid", heads="mean", image_norms=False)


def knockout_key(knockouts) -> str:
    """A stable text key of a knockout list (the cache key of ``Evidence.actions``)."""
    from flowlens.model.knockout import Knockout

    kos = [knockouts] if isinstance(knockouts, Knockout) else list(knockouts or ())
    for i, ko in enumerate(kos):
        if not isinstance(ko, Knockout):
            raise FlowlensError(
                f"knockouts[{i}] must be a flowlens.model.knockout.Knockout, got {type(ko).__name__}; "
                "e.g. Knockout(query='actions', key='words', layers=range(9, 18))."
            )
    return json.dumps([k.describe() for k in kos], sort_keys=True)


class Evidence:
    """One frame's evidence for a hypothesis (see the module docstring).

    Args:
      key: a unique name of the frame ("<episode>/<frame>").
      backend: a ``flowlens.pipeline`` backend (``ModelBackend`` for actions and interventions).
      frame: an episode ``Frame`` (``flowlens.io.sources``), or None when ``observation`` is given.
      observation: a batch-1 ``flowlens.model.Observation`` (overrides building one from ``frame``).
      labels: per-frame labels for grouping (JSON-like values).
      seed: the noise seed; the noise is ``normal`` from ``numpy.random.default_rng([seed, stream])``.
      stream: a per-frame integer mixed into the noise seed (default: the frame index).
    """

    def __init__(self, key: str, backend, *, frame=None, observation=None, labels: Mapping | None = None,
                 seed: int = 0, stream: int | None = None):
        if frame is None and observation is None:
            raise FlowlensError(f"Evidence {key!r} needs a frame (episode Frame) or an observation; got neither.")
        self.key = str(key)
        self.backend = backend
        self.frame = frame
        self._obs = observation
        self.labels = dict(labels or {})
        self.seed = int(seed)
        self.stream = int(stream if stream is not None else (getattr(frame, "index", 0) or 0))
        self._captures: dict[str, object] = {}
        self._actions: dict[str, np.ndarray] = {}
        self._patched: dict[tuple, np.ndarray] = {}

    def __repr__(self) -> str:
        return f"Evidence({self.key!r}, labels={self.labels!r})"

    # ---- the model side --------------------------------------------------------------------------
    @property
    def has_model(self) -> bool:
        return hasattr(self.backend, "model") and hasattr(self.backend, "params")

    def _need_model(self, what: str) -> None:
        if not self.has_model:
            raise FlowlensError(
                f"{what} needs a model, but frame {self.key!r} runs on the {getattr(self.backend, 'name', '?')!r} "
                "backend (attention only). Use --checkpoint builtin:tabletop or an openpi checkpoint."
            )

    @property
    def observation(self):
        """The batch-1 Observation the model reads (built from the frame on first use)."""
        self._need_model("an Observation")
        if self._obs is None:
            self._obs = self.backend.observation(self.frame)
        return self._obs

    @property
    def noise(self) -> np.ndarray:
        """float32 [1, action_horizon, action_dim]: this frame's fixed sampling noise."""
        self._need_model("sampling noise")
        cfg = self.backend.model.config
        rng = np.random.default_rng([self.seed, self.stream])
        return rng.standard_normal((1, cfg.action_horizon, cfg.action_dim)).astype(np.float32)

    @property
    def layout(self):
        """The TokenLayout of this frame (from the model's inputs, or the synthetic backend's)."""
        if self.has_model:
            return self.backend.model.layout(self.observation)
        if hasattr(self.backend, "layout") and self.frame is not None:
            return self.backend.layout(self.frame)
        return self.capture().layout

    def capture(self, config=None):
        """The Capture for a ``flowlens.model.CaptureConfig`` (default: valid rows of the prefix and
        step 0, heads averaged), computed once per config."""
        from flowlens.model import CaptureConfig

        config = _default_config() if config is None else config
        if not isinstance(config, CaptureConfig):
            raise FlowlensError(
                f"capture(config=...) takes a flowlens.model.CaptureConfig, got {type(config).__name__}; "
                "e.g. CaptureConfig(steps=(0,), query_rows='valid', heads='mean')."
            )
        key = repr(config)
        if key not in self._captures:
            if self.has_model:
                from flowlens.model import sample_actions

                actions, cap = sample_actions(self.backend.model, self.backend.params, self.observation,
                                              noise=self.noise, capture=config)
                self._actions.setdefault(knockout_key(()), self._task_actions(actions)[0])
            else:
                from flowlens.pipeline.backends import CaptureNeeds

                steps = (0,) if config.steps in ("all", "none") else tuple(config.steps) or (0,)
                needs = CaptureNeeds(steps=steps, graph=config.prefix, all_heads=config.heads is None)
                cap = self.backend.capture(self.frame, needs, seed=self.seed)
            self._captures[key] = cap
        return self._captures[key]

    def graph(self, step: int = 0, *, heads="mean", residual: float | None = 0.5, config=None):
        """TokenGraph of denoising ``step`` from ``capture(config)``."""
        from flowlens.core.graph import TokenGraph

        return TokenGraph.from_capture(self.capture(config), step, heads=heads, residual=residual)

    def _task_actions(self, actions: np.ndarray) -> np.ndarray:
        from flowlens.model.norm_stats import unnormalize

        stats = self.backend.norm_stats or {}
        if "actions" not in stats:
            return np.asarray(actions, np.float32)
        return unnormalize(actions, stats["actions"], quantile=self.backend.model.config.pi05).astype(np.float32)

    def actions(self, knockouts=()) -> np.ndarray:
        """float32 [action_horizon, action_dim]: the chunk sampled with ``knockouts`` (a Knockout or a
        list; () is the clean run) from this frame's noise, unnormalised when the backend has norm stats."""
        key = knockout_key(knockouts)
        if key not in self._actions:
            self._need_model("actions and interventions")
            from flowlens.model import sample_actions

            acts, _ = sample_actions(self.backend.model, self.backend.params, self.observation, noise=self.noise,
                                     knockouts=list(_as_list(knockouts)) or None)
            self._actions[key] = self._task_actions(acts)[0]
        return self._actions[key]

    def _store_actions(self, key: str, actions: np.ndarray) -> None:
        self._actions[key] = actions

    def patched(self, source: Evidence, site) -> np.ndarray:
        """float32 [action_horizon, action_dim]: this frame's chunk with one activation patched in from
        ``source``'s run (``flowlens.causal.PatchSite``: residual stream or a head's output at a layer,
        token selection and step), both runs on this frame's noise; unnormalised like :meth:`actions`.

        ``source`` is the corrupted input: another Evidence, e.g. the same frame with a swapped prompt
        or a failure episode's frame, with the same token layout at the patched tokens. Patching a
        frame with itself returns its clean chunk. Many frames at once: :func:`prefetch_patched`."""
        key = _patch_key(source, site)
        if key not in self._patched:
            prefetch_patched([self], [source], [site], batch_size=1)
        return self._patched[key]


def _patch_key(source: Evidence, site) -> tuple:
    from flowlens.causal.patching import PatchSite

    if not isinstance(source, Evidence):
        raise FlowlensError(f"source must be an Evidence (the corrupted input's frame), got {type(source).__name__}; "
                            "e.g. Evidence(key, backend, observation=swapped_prompt_obs).")
    if not isinstance(site, PatchSite):
        raise FlowlensError(f"site must be a flowlens.causal.PatchSite, got {type(site).__name__}; "
                            "e.g. PatchSite(layer=9, tokens='base_0_rgb | left_wrist_0_rgb').")
    return (source.key, repr(site))


def prefetch_patched(evidences: Sequence[Evidence], sources: Sequence[Evidence], sites, *,
                     batch_size: int = 8) -> int:
    """Patch every site of ``sites`` into every evidence from its paired source (evidences[i] ←
    sources[i]), batched through ``flowlens.causal.patching.patch_frames``; returns the frames run.

    Fills the cache of :meth:`Evidence.patched` (and the clean run of :meth:`Evidence.actions`)."""
    from flowlens.causal.patching import patch_frames

    evs, srcs, sites = list(evidences), list(sources), list(sites)
    if len(evs) != len(srcs):
        raise FlowlensError(f"evidences has {len(evs)} frames and sources {len(srcs)}; pair every frame with "
                            "one source (corrupted) frame.")
    todo = [i for i, (ev, src) in enumerate(zip(evs, srcs, strict=True))
            if any(_patch_key(src, st) not in ev._patched for st in sites)]
    by_backend: dict[int, list[int]] = {}
    for i in todo:
        evs[i]._need_model("activation patching")
        by_backend.setdefault(id(evs[i].backend), []).append(i)
    for members in by_backend.values():
        backend = evs[members[0]].backend
        base, _, patched = patch_frames(backend.model, backend.params, [evs[i].observation for i in members],
                                        [srcs[i].observation for i in members], sites,
                                        noise=np.concatenate([evs[i].noise for i in members]), batch_size=batch_size)
        first = evs[members[0]]
        base = first._task_actions(base)
        for s, site in enumerate(sites):
            task = first._task_actions(patched[s])
            for j, i in enumerate(members):
                evs[i]._patched[_patch_key(srcs[i], site)] = task[j]
        for j, i in enumerate(members):
            evs[i]._actions.setdefault(knockout_key(()), base[j])
    return len(todo)


def _as_list(knockouts):
    from flowlens.model.knockout import Knockout

    return [knockouts] if isinstance(knockouts, Knockout) else list(knockouts or ())


def prefetch_actions(evidences: Sequence[Evidence], knockouts=(), *, batch_size: int = DEFAULT_BATCH) -> int:
    """Sample ``knockouts`` for every evidence not holding it yet, batched; returns the sampler calls made.

    Runs through the interventions' one batched sampler (:func:`flowlens.causal.batching.sample_frames`):
    frames share a call only on the same backend and with the same token layout and prompt (a knockout
    resolves on one layout per call, word selections on its prompt), in batches of ``batch_size``
    padded to a power of two.
    """
    from flowlens.causal.batching import layout_key, sample_frames

    if batch_size < 1:
        raise FlowlensError(f"batch_size must be >= 1, got {batch_size}.")
    key = knockout_key(knockouts)
    todo = [ev for ev in evidences if key not in ev._actions]
    for ev in todo:
        ev._need_model("actions and interventions")
    by_backend: dict[int, list[Evidence]] = {}
    for ev in todo:
        by_backend.setdefault(id(ev.backend), []).append(ev)
    calls = 0
    for members in by_backend.values():
        backend = members[0].backend
        acts, n = sample_frames(backend.model, backend.params, [ev.observation for ev in members],
                                np.concatenate([ev.noise for ev in members]), _as_list(knockouts),
                                batch_size=batch_size, keys=[layout_key(ev.layout) for ev in members], pad="pow2")
        task = members[0]._task_actions(acts)
        for ev, a in zip(members, task, strict=True):
            ev._store_actions(key, a)
        calls += n
    return calls
