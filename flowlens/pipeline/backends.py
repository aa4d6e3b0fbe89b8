"""Backends: where a frame's attention comes from — a checkpoint, the embedded model, or a synthetic stand-in.

Every backend turns one episode ``Frame`` (camera images as stored, prompt, state, frame
transforms) into a ``Capture``, recording only what the analysis needs (``CaptureNeeds``):

- ``load_backend("path/to/openpi_checkpoint", tokenizer=..., config=...)`` — the Flax Pi0 / Pi0.5
  model (``flowlens.model``) on an openpi checkpoint directory;
- ``load_backend("builtin:tabletop")`` — the small model trained on the synthetic tabletop task
  that ships inside flowlens (``flowlens.tasks``), when it is installed;
- ``load_backend("synthetic")`` — no model at all: attention from random logits plus the
  structure real Pi0 attention has (BOS / "\\n" sinks that grow with depth,
  action tokens drawn to the most salient patches of *this* frame, text-reading heads, a local
  action-to-action band), over the exact Pi0 layout and masks. It exists so that every command,
  figure and test runs without weights; its heatmaps follow the objects in the frame but say
  nothing about any trained policy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
from pathlib import Path
from typing import Protocol

import numpy as np
from threadpoolctl import threadpool_limits

from flowlens.core.capture import AttentionPass, Capture, PassKind
from flowlens.core.frame import FrameTransform
from flowlens.core.layout import PI0_CAMERAS, TokenLayout, pi0_layout, pi05_layout
from flowlens.errors import FlowlensError, unknown_name_error

SYNTHETIC = "synthetic"
NOISE_RANK = 16
PATCH = 14  # SigLIP So400m/14 patch size
BUILTIN_PREFIX = "builtin:"


@dataclasses.dataclass(frozen=True)
class CaptureNeeds:
    """What an analysis needs recorded.

    Attributes:
      steps: the denoising steps read (the capture records steps 0 … max(steps), in order).
      graph: the whole attention graph (prefix pass + every valid row) — rollout and flow need it;
        raw attention needs only the suffix rows.
      all_heads: keep every head (per-head figures, ``--heads``); else store the mean over heads.
    """

    steps: tuple[int, ...] = (0,)
    graph: bool = True
    all_heads: bool = False


class Backend(Protocol):
    """A source of captures (see module docstring)."""

    name: str
    num_layers: int
    num_heads: int
    num_steps: int

    def capture(self, frame, needs: CaptureNeeds, *, seed: int = 0) -> Capture: ...


# ---- synthetic ----------------------------------------------------------------------------------
def patch_saliency(image: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """How much each patch stands out: colourfulness plus distance from the frame's median colour.

    Args:
      image: uint8 [H, W, 3] model input.
      grid: (rows, cols) of patches.
    Returns:
      float32 [rows * cols], z-scored (0 mean, unit std; zeros for a flat image).
    """
    img = np.asarray(image, dtype=np.float32) / 255.0
    rows, cols = grid
    h, w = (img.shape[0] // rows) * rows, (img.shape[1] // cols) * cols
    patches = img[:h, :w].reshape(rows, h // rows, cols, w // cols, 3).mean(axis=(1, 3))
    chroma = patches.max(axis=-1) - patches.min(axis=-1)
    distance = np.linalg.norm(patches - np.median(patches.reshape(-1, 3), axis=0), axis=-1)
    s = (chroma + distance).reshape(-1)
    std = float(s.std())
    return ((s - s.mean()) / std if std > 1e-6 else np.zeros_like(s)).astype(np.float32)


@dataclasses.dataclass
class SyntheticBackend:
    """Structured random attention over the Pi0 (or Pi0.5) LIBERO layout; see the module docstring.

    Attributes:
      variant: "pi0" (state token, 48 text tokens, 50 actions) or "pi05" (200 text tokens, 10 actions).
      num_layers, num_heads, num_steps: model depth, query heads, denoising steps (Pi0: 18, 8, 10).
      noise: std of the random part of the logits (higher = more peaked, less structured attention).
    """

    variant: str = "pi0"
    num_layers: int = 18
    num_heads: int = 8
    num_steps: int = 10
    noise: float = 1.2
    name: str = SYNTHETIC

    def __post_init__(self) -> None:
        if self.variant not in ("pi0", "pi05"):
            raise unknown_name_error("synthetic variant", self.variant, ("pi0", "pi05"))

    def layout(self, frame) -> TokenLayout:
        """The openpi layout for this frame's cameras, with a 14-px patch grid over the model input
        size its frame transforms name (224 px → 16×16 as in Pi0; smaller inputs, smaller grids)."""
        valid = tuple(cam in frame.images for cam in PI0_CAMERAS)
        given = [frame.transforms[c] for c in PI0_CAMERAS if c in frame.transforms]
        mh, mw = given[0].model_size if given else (224, 224)
        size = (mh, mw)
        transforms = [frame.transforms.get(cam, FrameTransform(size, size)) for cam in PI0_CAMERAS]
        grid = (max(1, mh // PATCH), max(1, mw // PATCH))
        make = pi0_layout if self.variant == "pi0" else pi05_layout
        return make(frame.prompt, camera_valid=valid, transforms=transforms, grid=grid, patch_size=PATCH)

    def capture(self, frame, needs: CaptureNeeds = CaptureNeeds(), *, seed: int = 0) -> Capture:
        from flowlens.io.sources.base import to_model_input

        layout = self.layout(frame)
        index = int(frame.index or 0)
        rng = np.random.default_rng([seed, index])
        key_bias = np.zeros(layout.n, np.float32)  # bias every suffix query gives each key
        for cam in layout.cameras:
            if cam.name in frame.images:
                model_img = to_model_input(frame.images[cam.name], frame.transforms[cam.name])
                key_bias[cam.start : cam.stop] = 2.2 * patch_saliency(model_img, cam.grid)
        groups = layout.groups()
        depth = np.linspace(0.0, 1.0, self.num_layers, dtype=np.float32)
        word_bias = np.zeros(layout.n, np.float32)
        if "words" in groups:  # a fixed per-prompt preference for some words
            word_bias[groups["words"]] = 1.0 + rng.gamma(1.5, 0.8, groups["words"].size).astype(np.float32)
        h2 = self.num_heads // 2
        head_mix = np.zeros((self.num_heads, 1, 1), np.float32)
        head_mix[:h2] = 1.0  # "visual" heads follow the salient patches; the others read the prompt
        mask = layout.attention_mask()
        valid = layout.valid
        p_len = layout.prefix_len
        max_step = max(needs.steps) if needs.steps else 0
        reduce = None if needs.all_heads else "mean"

        def pass_probs(rows: np.ndarray, key_count: int, bias_fn, stream: int) -> np.ndarray:
            # One random stream per pass: a pass is the same whatever else is recorded.
            prng = np.random.default_rng([seed, index, stream])
            keys = np.flatnonzero(valid[:key_count])
            # Random part: rank-16 query · key products (4× cheaper than i.i.d. normals per entry);
            # one BLAS thread, since many small products only contend for threads.
            shape = (self.num_layers, self.num_heads)
            u = prng.standard_normal((*shape, rows.size, NOISE_RANK), dtype=np.float32)
            v = prng.standard_normal((*shape, NOISE_RANK, keys.size), dtype=np.float32)
            with threadpool_limits(1, user_api="blas"):
                logits = u @ v
            logits *= np.float32(self.noise / np.sqrt(NOISE_RANK))
            logits += bias_fn(rows, keys)
            logits = np.where(mask[np.ix_(rows, keys)], logits, np.float32(-1e30))
            logits -= logits.max(axis=-1, keepdims=True)
            np.exp(logits, out=logits)
            logits /= logits.sum(axis=-1, keepdims=True)
            if reduce == "mean":
                logits = logits.mean(axis=1, keepdims=True)
            out = np.zeros(logits.shape[:3] + (key_count,), np.float32)
            out[..., keys] = logits
            return out

        def sinks(keys):
            b = np.zeros((self.num_layers, 1, 1, keys.size), np.float32)
            for sink, strength in (("bos", 2.0), ("newline", 1.2)):
                if sink in groups:
                    hit = np.isin(keys, groups[sink])
                    b[..., hit] += strength * (1.0 + 3.0 * depth[:, None, None, None])
            return b

        # Image tokens mostly read their own neighbourhood and the salient patches (so what the
        # actions read at layer l still points at places in the frame, as in trained ViT-LLMs).
        cell = np.full((layout.n, 3), -1000, np.int64)  # (camera, row, col) of image tokens
        for ci, cam in enumerate(layout.cameras):
            r, c = np.divmod(np.arange(cam.size), cam.grid[1])
            cell[cam.start : cam.stop] = np.stack([np.full(cam.size, ci), r, c], axis=1)

        def prefix_bias(rows, keys):
            cr, ck = cell[rows][:, None, :], cell[keys][None, :, :]
            same_cam = (cr[..., 0] == ck[..., 0]) & (cr[..., 0] >= 0)
            dist = np.abs(cr[..., 1:] - ck[..., 1:]).max(axis=-1)
            local = np.where(same_cam, np.where(dist == 0, 2.0, np.where(dist == 1, 1.0, 0.0)), 0.0)
            salient = np.where(cr[..., 0] >= 0, 0.2 * key_bias[keys][None, :], 0.0)
            return sinks(keys) + 0.3 * word_bias[keys] + (local + salient).astype(np.float32)

        def suffix_bias(step):
            t = 1.0 - step / self.num_steps
            grow = np.float32(0.6 + 0.4 * (1.0 - t))

            def fn(rows, keys):
                b = sinks(keys)
                vis = head_mix * grow * key_bias[keys] * (0.4 + depth[:, None, None, None])
                txt = (1.0 - head_mix) * 0.9 * word_bias[keys]
                b = b + vis + txt
                act = layout.actions
                if act is not None:
                    ra, ka = rows - act.start, keys - act.start
                    band = np.where(
                        (ra[:, None] >= 0) & (ka[None, :] >= 0) & (ka[None, :] < act.size),
                        1.5 - 0.25 * np.abs(ra[:, None] - ka[None, :]),
                        0.0,
                    ).astype(np.float32)
                    b = b + band
                return b

            return fn

        layers = tuple(range(self.num_layers))
        passes = []
        if needs.graph:
            rows = np.flatnonzero(valid[:p_len])
            passes.append(
                AttentionPass(
                    PassKind.PREFIX,
                    pass_probs(rows, p_len, prefix_bias, 0),
                    layers,
                    rows,
                    head_reduction=reduce,
                )
            )
        rows = p_len + np.flatnonzero(valid[p_len:])
        for s in range(max_step + 1):
            passes.append(
                AttentionPass(
                    PassKind.SUFFIX,
                    pass_probs(rows, layout.n, suffix_bias(s), 1 + s),
                    layers,
                    rows,
                    step=s,
                    time=1.0 - s / self.num_steps,
                    head_reduction=reduce,
                )
            )
        horizon = layout.actions.size if layout.actions is not None else 0
        actions = rng.standard_normal((horizon, 7)).astype(np.float32)
        return Capture(
            layout=layout,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            passes=tuple(passes),
            actions=actions,
            model=SYNTHETIC,
            metadata={
                "prompt": frame.prompt,
                "frame_index": frame.index,
                "seed": seed,
                "num_steps": self.num_steps,
                "note": "synthetic attention, no model",
            },
        )


# ---- real models --------------------------------------------------------------------------------
@dataclasses.dataclass
class ModelBackend:
    """The flowlens Flax Pi0 / Pi0.5 model with parameters, tokenizer and (optional) norm stats.

    Attributes:
      model: a ``flowlens.model.Pi0Model``.
      params: its parameter tree (openpi layout).
      tokenizer: a ``flowlens.model.tokenizer.PaligemmaTokenizer`` (or anything with ``tokenize``).
      norm_stats: the checkpoint's norm stats (state normalisation), or None.
      name: how outputs name the model ("pi0_libero", "tabletop", ...).
      discrete_state: put the discretised state into the prompt (Pi0.5's "Task: …, State: …;"
        format); None: ``make_observation``'s default for the config (openpi's).
    """

    model: object
    params: object
    tokenizer: object
    norm_stats: object = None
    name: str = "model"
    discrete_state: bool | None = None

    @property
    def config(self):
        return self.model.config

    @property
    def num_layers(self) -> int:
        return int(self.config.num_layers)

    @property
    def num_heads(self) -> int:
        return int(self.config.num_heads)

    @property
    def num_steps(self) -> int:
        return int(self.config.num_steps)

    def capture(self, frame, needs: CaptureNeeds = CaptureNeeds(), *, seed: int = 0) -> Capture:
        import jax

        from flowlens.model import CaptureConfig, sample_actions
        from flowlens.model.preprocess import make_observation

        cams = [c for c in frame.images if c in self.config.cameras]
        if not cams:
            raise FlowlensError(
                f"the frame has cameras {sorted(frame.images)} but the model reads "
                f"{list(self.config.cameras)}; "
                "open the episode with a camera mapping the model knows (LIBERO: image → base_0_rgb)."
            )
        rotations = {frame.transforms[c].rotate180 for c in cams}
        if len(rotations) > 1:
            raise FlowlensError("cameras of one frame disagree on rotate180; open them with one orientation.")
        obs = make_observation(
            {c: frame.images[c] for c in cams},
            frame.prompt,
            frame.state,
            self.tokenizer,
            self.config,
            rotate180=rotations.pop(),
            norm_stats=self.norm_stats,
            discrete_state=self.discrete_state,
        )
        max_step = max(needs.steps) if needs.steps else 0
        cfg = CaptureConfig(
            prefix=needs.graph,
            steps=tuple(range(max_step + 1)),
            query_rows="valid" if needs.graph else "suffix",
            heads=None if needs.all_heads else "mean",
        )
        _, capture = sample_actions(self.model, self.params, obs, rng=jax.random.key(seed), capture=cfg)
        meta = {**capture.metadata, "prompt": frame.prompt, "frame_index": frame.index}
        return dataclasses.replace(capture, model=self.name, metadata=meta)


def _load_checkpoint_backend(path: str, *, tokenizer: str | None, config: str | None) -> ModelBackend:
    ckpt = Path(os.path.expanduser(path))
    if not ckpt.exists():
        raise FlowlensError(
            f"checkpoint {path!r} does not exist. Pass --checkpoint with an openpi checkpoint directory (the "
            "folder holding params/), builtin:tabletop for the embedded model, or synthetic to run "
            "without a model."
        )
    if not ckpt.is_dir():
        raise FlowlensError(
            f"checkpoint {path!r} is a file, but flowlens reads openpi checkpoint directories (the "
            "folder holding params/ and assets/). Pass that directory, builtin:tabletop, or synthetic."
        )
    from flowlens.model import Pi0Model
    from flowlens.model.checkpoint import load_checkpoint, resolve_params_dir
    from flowlens.model.tokenizer import PaligemmaTokenizer, default_tokenizer_path

    # What is wrong with the folder itself is said first (a quick look for params/), then a missing
    # tokenizer file, both before the slow checkpoint read.
    try:
        resolve_params_dir(ckpt)
    except FlowlensError as e:
        raise FlowlensError(f"could not read checkpoint {path!r}: {e}") from None
    tok_path = Path(os.path.expanduser(tokenizer)) if tokenizer else default_tokenizer_path()
    if tok_path is None or not tok_path.is_file():
        where = f"--tokenizer {tokenizer!r} does not exist" if tokenizer else "no --tokenizer was given"
        raise FlowlensError(
            f"a real checkpoint needs PaliGemma's SentencePiece file paligemma_tokenizer.model, but {where} "
            "(nor $FLOWLENS_TOKENIZER, nor openpi's cache). Download "
            "https://storage.googleapis.com/big_vision/paligemma_tokenizer.model and pass --tokenizer PATH."
        )
    try:
        with _quiet_absl():
            loaded = load_checkpoint(ckpt, config)
    except FlowlensError as e:
        raise FlowlensError(f"could not read checkpoint {path!r}: {e}") from None
    except Exception as e:  # orbax / tensorstore / OS errors on a corrupt or foreign folder
        raise FlowlensError(
            f"could not read checkpoint {path!r} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). "
            "Is it an openpi checkpoint directory (params/ written by orbax)?"
        ) from None
    cfg = loaded.config
    tok = PaligemmaTokenizer(tok_path, max_len=cfg.max_token_len)
    return ModelBackend(
        model=Pi0Model(cfg),
        params=loaded.params,
        tokenizer=tok,
        norm_stats=loaded.norm_stats,
        name=getattr(cfg, "name", None) or ckpt.name,
    )


@contextlib.contextmanager
def _quiet_absl():
    """Keep orbax's absl WARNING lines off the terminal while a checkpoint is read (errors still
    show); the previous absl verbosity is restored afterwards."""
    try:
        from absl import logging as absl_logging
    except ImportError:  # pragma: no cover - absl comes with orbax
        yield
        return
    before = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(before)


def _tasks_module():
    try:
        return importlib.import_module("flowlens.tasks.tabletop")
    except ImportError:
        return None


def _load_builtin(name: str) -> ModelBackend:
    """``builtin:<name>``: the embedded model shipped in ``flowlens.tasks`` (config, params, tokenizer)."""
    from flowlens.model import Pi0Model

    tasks = _tasks_module()
    if tasks is None or not hasattr(tasks, "load_builtin"):
        raise FlowlensError(
            f"--checkpoint builtin:{name} needs the embedded models (flowlens.tasks), which this "
            "installation does not have; use --checkpoint synthetic to run without a model."
        )
    config, params, tokenizer = tasks.load_builtin(name)  # FlowlensError: unknown name, missing assets
    norm = tasks.load_builtin_norm_stats(name) if hasattr(tasks, "load_builtin_norm_stats") else None
    # The embedded model reads the state as a continuous input, never in the prompt (as the
    # tabletop policy feeds it: flowlens.tasks.tabletop.policy.observe).
    return ModelBackend(
        model=Pi0Model(config),
        params=params,
        tokenizer=tokenizer,
        norm_stats=norm,
        name=f"{BUILTIN_PREFIX}{name}",
        discrete_state=False,
    )


def load_backend(
    checkpoint: str, *, tokenizer: str | None = None, config: str | None = None, num_steps: int | None = None
) -> Backend:
    """The backend named by a ``--checkpoint`` value.

    Args:
      checkpoint: "synthetic" (or "synthetic:pi05"), "builtin:<name>", or an openpi checkpoint directory.
      tokenizer: PaliGemma SentencePiece file for real checkpoints (default: $FLOWLENS_TOKENIZER or
        openpi's cache).
      config: registry name (pi0_libero, pi05_libero, ...) for what parameter shapes cannot tell.
      num_steps: denoising steps of the synthetic backend (default 10).
    Raises:
      FlowlensError: missing / unreadable checkpoint, missing tokenizer, unknown builtin.
    """
    text = str(checkpoint).strip()
    if text == SYNTHETIC or text.startswith(SYNTHETIC + ":"):
        variant = text.partition(":")[2] or "pi0"
        return SyntheticBackend(variant=variant, **({"num_steps": num_steps} if num_steps else {}))
    if text.startswith(BUILTIN_PREFIX):
        return _load_builtin(text[len(BUILTIN_PREFIX) :] or "tabletop")
    return _load_checkpoint_backend(text, tokenizer=tokenizer, config=config)


def builtin_available(name: str = "tabletop") -> bool:
    """True when ``builtin:<name>`` can be loaded (``flowlens.tasks`` and its shipped weights are there)."""
    tasks = _tasks_module()
    if tasks is None or not hasattr(tasks, "load_builtin") or not hasattr(tasks, "generate_demo_episodes"):
        return False
    try:
        from flowlens.tasks.tabletop.builtin import builtin_dir

        builtin_dir(name)
    except (ImportError, FlowlensError):
        return False
    return True
