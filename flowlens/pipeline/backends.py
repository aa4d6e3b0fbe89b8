"""Backends: where a frame's attention comes from — a checkpoint, the embedded model, or a synthetic stand-in.

Every backend turns one episode ``Frame`` (camera images as stored, prompt, state, frame
transforms) into a ``Capture``, recording only what the analysis needs (``CaptureNeeds``):

- ``load_backend("path/to/openpi_checkpoint", tokenizer=..., config=...)`` — the Flax Pi0 / Pi0.5
  model (``flowlens.model``) on an openpi checkpoint directory;
- ``load_backend("builtin:tabletop")`` — the small model trained on the synthetic tabletop task
  that ships inside flowlens (``flowlens.tasks``), when it is installed;
- ``load_backend("synthetic")`` — no model at all: ``flowlens.testing``'s structured random
  attention (BOS / "\\n" sinks that grow with depth, action tokens drawn to the most salient
  patches of *this* frame, text-reading heads, a local action-to-action band), over the exact Pi0
  layout and openpi's masks. It exists so that every command, figure and test runs without
  weights; its heatmaps follow the objects in the frame but say nothing about any trained policy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from flowlens.core.capture import Capture
from flowlens.core.frame import FrameTransform
from flowlens.core.layout import TokenLayout
from flowlens.core.openpi_layout import PI0_CAMERAS, pi05_layout, pi0_layout
from flowlens.errors import FlowlensError, unknown_name_error
from flowlens.testing.synthetic import structured_capture

SYNTHETIC = "synthetic"
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
      residual: record the residual stream (``CaptureConfig(residual=True)``: norm, ALTI, value zeroing).
    """

    steps: tuple[int, ...] = (0,)
    graph: bool = True
    all_heads: bool = False
    residual: bool = False


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
        """``flowlens.testing.structured_capture`` over this frame's layout, the action queries'
        visual heads drawn to the frame's salient patches; seeded by (seed, frame index)."""
        from flowlens.io.sources.base import to_model_input

        layout = self.layout(frame)
        index = int(frame.index or 0)
        saliency = np.zeros(layout.n, np.float32)  # the patches that draw the action tokens
        for cam in layout.cameras:
            if cam.name in frame.images:
                model_img = to_model_input(frame.images[cam.name], frame.transforms[cam.name])
                saliency[cam.start : cam.stop] = 2.2 * patch_saliency(model_img, cam.grid)
        horizon = layout.actions.size if layout.actions is not None else 0
        actions = np.random.default_rng([seed, index]).standard_normal((horizon, 7)).astype(np.float32)
        max_step = max(needs.steps) if needs.steps else 0
        return structured_capture(
            layout, num_layers=self.num_layers, num_heads=self.num_heads, num_steps=self.num_steps,
            steps=range(max_step + 1), prefix=needs.graph, rows="valid", key_preference=saliency,
            sharpness=self.noise, head_reduction=None if needs.all_heads else "mean", stream=(seed, index),
            actions=actions, model=SYNTHETIC,
            metadata={"prompt": frame.prompt, "frame_index": frame.index, "seed": seed,
                      "num_steps": self.num_steps, "note": "synthetic attention, no model"})


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

    def observation(self, frame):
        """The batch-1 ``Observation`` the model reads for an episode ``Frame`` (its cameras the
        model knows, letterboxed; the prompt tokenised; the state normalised)."""
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
        return make_observation(
            {c: frame.images[c] for c in cams},
            frame.prompt,
            frame.state,
            self.tokenizer,
            self.config,
            rotate180=rotations.pop(),
            norm_stats=self.norm_stats,
            discrete_state=self.discrete_state,
        )

    def noise(self, seed: int = 0) -> np.ndarray:
        """float32 [1, action_horizon, action_dim]: the initial noise ``capture(..., seed=seed)`` samples from."""
        import jax

        cfg = self.config
        return np.asarray(jax.random.normal(jax.random.key(seed), (1, cfg.action_horizon, cfg.action_dim)),
                          np.float32)

    def capture(self, frame, needs: CaptureNeeds = CaptureNeeds(), *, seed: int = 0) -> Capture:
        from flowlens.model import CaptureConfig, sample_actions

        obs = self.observation(frame)
        max_step = max(needs.steps) if needs.steps else 0
        cfg = CaptureConfig(
            prefix=needs.graph,
            steps=tuple(range(max_step + 1)),
            query_rows="valid" if needs.graph else "suffix",
            heads=None if needs.all_heads else "mean",
            residual=needs.residual,
        )
        _, capture = sample_actions(self.model, self.params, obs, noise=self.noise(seed), capture=cfg)
        meta = {**capture.metadata, "prompt": frame.prompt, "frame_index": frame.index}
        return dataclasses.replace(capture, model=self.name, metadata=meta)


def _load_checkpoint_backend(path: str, *, tokenizer: str | None, config: str | None) -> ModelBackend:
    ckpt = Path(os.path.expanduser(path))
    if not ckpt.exists():
        raise FlowlensError(
            f"checkpoint {path!r} does not exist. Pass --checkpoint with an openpi checkpoint directory (the "
            "folder holding params/), a PyTorch one (openpi's converter or LeRobot: the folder holding "
            "model.safetensors), builtin:tabletop for the embedded model, or synthetic to run without a model."
        )
    if not ckpt.is_dir() and ckpt.suffix != ".safetensors":
        raise FlowlensError(
            f"checkpoint {path!r} is a file, but flowlens reads checkpoint directories (openpi: the folder "
            "holding params/ and assets/; PyTorch / LeRobot: the folder holding model.safetensors) or a "
            ".safetensors file. Pass one of those, builtin:tabletop, or synthetic."
        )
    from flowlens.model import Pi0Model
    from flowlens.model.checkpoint import load_checkpoint, resolve_params_dir
    from flowlens.model.tokenizer import PaligemmaTokenizer, default_tokenizer_path
    from flowlens.model.torch_checkpoint import weights_file

    # What is wrong with the folder itself is said first (a quick look for model.safetensors or
    # params/), then a missing tokenizer file, both before the slow checkpoint read.
    if weights_file(ckpt) is None:
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
            "Is it an openpi checkpoint directory (params/ written by orbax) or a PyTorch / LeRobot one "
            "(model.safetensors)?"
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
      checkpoint: "synthetic" (or "synthetic:pi05"), "builtin:<name>", an openpi checkpoint directory
        (orbax ``params/``), or a PyTorch one (openpi converter / LeRobot: ``model.safetensors``).
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
