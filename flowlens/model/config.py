"""Model configurations: the sizes of a Pi0 / Pi0.5 policy, and a named registry of them.

A Pi0-family policy is a SigLIP image encoder, a PaliGemma Gemma expert (expert 0: images and
prompt, the *prefix*) and a smaller Gemma *action expert* (expert 1: state and actions, the
*suffix*). The two experts have separate weights but share one attention per layer; both must
have the same depth, number of heads, key/value heads and head size (openpi requires it).

The registry holds openpi's configurations (``pi0``, ``pi05``, ``pi0_libero``, ``pi05_libero``,
``dummy``, ``dummy_pi05``) and small test configurations (``test_tiny``, ``test_tiny_pi05``,
``test_small``) that keep Pi0's 18 layers and 8 query heads sharing 1 key/value head but shrink
every width, so the whole stack runs on a laptop CPU.

Example::

    cfg = get_config("pi05_libero")
    cfg.prefix_len    # 968 = 3 cameras x 256 patches + 200 text tokens
"""

from __future__ import annotations

import dataclasses

from flowlens.errors import FlowlensError, unknown_name_error

PALIGEMMA_VOCAB_SIZE = 257_152
# openpi's image keys; jitted openpi code sees the images dict in sorted key order, which for
# these names is also this order.
PI0_CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
DTYPES = ("bfloat16", "float32")


@dataclasses.dataclass(frozen=True)
class GemmaConfig:
    """One Gemma expert.

    Attributes:
      width: model width D (2048 for PaliGemma's Gemma-2B, 1024 for the 300M action expert).
      depth: number of layers L (18).
      mlp_dim: hidden size F of the gated-GELU MLP.
      num_heads: query heads N (8).
      num_kv_heads: key/value heads K (1: multi-query attention).
      head_dim: size H of one head (256).
    """

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or v <= 0:
                raise FlowlensError(f"GemmaConfig.{f.name} must be a positive int, got {v!r}.")
        if self.num_heads % self.num_kv_heads:
            raise FlowlensError(
                f"GemmaConfig.num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads})."
            )
        if self.head_dim % 2:
            raise FlowlensError(f"GemmaConfig.head_dim must be even for RoPE, got {self.head_dim}.")


@dataclasses.dataclass(frozen=True)
class SiglipConfig:
    """The SigLIP image encoder (ViT, no CLS token, linear head to the LLM width).

    Attributes:
      width: ViT width (1152 for So400m).
      depth: encoder blocks (27).
      mlp_dim: MLP hidden size (4304).
      num_heads: attention heads (16).
      patch_size: pixels per patch side (14).
      image_size: input side in pixels (224); the patch grid is image_size // patch_size.
      out_dim: output width of the head = the PaliGemma expert's width.
    """

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: int
    image_size: int
    out_dim: int

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise FlowlensError(
                f"SiglipConfig.image_size ({self.image_size}) must be a multiple of patch_size "
                f"({self.patch_size})."
            )

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the patch grid (16×16 for So400m/14 at 224)."""
        g = self.image_size // self.patch_size
        return (g, g)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclasses.dataclass(frozen=True)
class Pi0Config:
    """A Pi0 (``pi05=False``) or Pi0.5 (``pi05=True``) policy.

    Attributes:
      paligemma: expert 0 (prefix: image patches and prompt tokens).
      action_expert: expert 1 (suffix: Pi0's state token and the action tokens).
      siglip: the image encoder; ``siglip.out_dim`` must equal ``paligemma.width``.
      pi05: Pi0.5 (time enters through adaRMS, no state token) instead of Pi0.
      action_dim: padded action / state size (32).
      action_horizon: action tokens per chunk H_a (50; 10 for pi05_libero).
      max_token_len: prompt tokens, padded (48 for Pi0, 200 for Pi0.5).
      num_steps: default number of Euler denoising steps (10).
      dtype: compute dtype, "bfloat16" (openpi) or "float32" (exact comparisons).
      cameras: camera names in the order they enter the prefix.
      vocab_size: rows of the token embedding (PaliGemma's 257,152).
      name: registry name, recorded in captures.
    """

    paligemma: GemmaConfig
    action_expert: GemmaConfig
    siglip: SiglipConfig
    pi05: bool = False
    action_dim: int = 32
    action_horizon: int = 50
    max_token_len: int = 48
    num_steps: int = 10
    dtype: str = "bfloat16"
    cameras: tuple[str, ...] = PI0_CAMERAS
    vocab_size: int = PALIGEMMA_VOCAB_SIZE
    name: str = "custom"

    def __post_init__(self) -> None:
        a, b = self.paligemma, self.action_expert
        for attr in ("depth", "num_heads", "num_kv_heads", "head_dim"):
            if getattr(a, attr) != getattr(b, attr):
                raise FlowlensError(
                    f"both experts must share {attr}: paligemma has {getattr(a, attr)}, action_expert "
                    f"has {getattr(b, attr)}. Give the action expert the same {attr}."
                )
        if self.siglip.out_dim != a.width:
            raise FlowlensError(
                f"siglip.out_dim ({self.siglip.out_dim}) must equal paligemma.width ({a.width}): the image "
                "head projects patches into the PaliGemma expert."
            )
        if self.dtype not in DTYPES:
            raise FlowlensError(f"dtype must be one of {DTYPES}, got {self.dtype!r}.")
        for attr in ("action_dim", "action_horizon", "max_token_len", "num_steps", "vocab_size"):
            v = getattr(self, attr)
            if not isinstance(v, int) or v <= 0:
                raise FlowlensError(f"Pi0Config.{attr} must be a positive int, got {v!r}.")
        object.__setattr__(self, "cameras", tuple(self.cameras))

    @property
    def variant(self) -> str:
        """"pi05" or "pi0" (the TokenLayout variant)."""
        return "pi05" if self.pi05 else "pi0"

    @property
    def num_layers(self) -> int:
        return self.paligemma.depth

    @property
    def num_heads(self) -> int:
        return self.paligemma.num_heads

    @property
    def prefix_len(self) -> int:
        """Prefix tokens: cameras × patches + prompt tokens."""
        return len(self.cameras) * self.siglip.num_patches + self.max_token_len

    @property
    def suffix_len(self) -> int:
        """Suffix tokens: [state] + actions."""
        return self.action_horizon + (0 if self.pi05 else 1)

    def replace(self, **changes) -> Pi0Config:
        """A copy with some fields changed (``cfg.replace(dtype="float32")``)."""
        return dataclasses.replace(self, **changes)


# ---- presets ----------------------------------------------------------------------------------
GEMMA_2B = GemmaConfig(width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256)
GEMMA_300M = GemmaConfig(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256)
GEMMA_DUMMY = GemmaConfig(width=64, depth=4, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16)


def so400m(out_dim: int) -> SiglipConfig:
    """SigLIP So400m/14 at 224 px (16×16 patches) with a head to ``out_dim``."""
    return SiglipConfig(width=1152, depth=27, mlp_dim=4304, num_heads=16, patch_size=14, image_size=224,
                        out_dim=out_dim)


def _tiny_gemma(width: int, mlp: int, head_dim: int = 16) -> GemmaConfig:
    return GemmaConfig(width=width, depth=18, mlp_dim=mlp, num_heads=8, num_kv_heads=1, head_dim=head_dim)


def _registry() -> dict[str, Pi0Config]:
    full = dict(paligemma=GEMMA_2B, action_expert=GEMMA_300M, siglip=so400m(2048))
    dummy = dict(paligemma=GEMMA_DUMMY, action_expert=GEMMA_DUMMY, siglip=so400m(64))
    # 18 layers, 8 heads / 1 KV head, tiny widths; 56 px images → a 4×4 grid per camera.
    tiny = dict(paligemma=_tiny_gemma(64, 128), action_expert=_tiny_gemma(32, 64),
                siglip=SiglipConfig(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=14,
                                    image_size=56, out_dim=64))
    # mid-size for benchmarks: 224 px images (16×16 grid, the real 816-token prefix), narrow widths.
    small = dict(paligemma=_tiny_gemma(128, 256, head_dim=32),
                 action_expert=_tiny_gemma(64, 128, head_dim=32),
                 siglip=SiglipConfig(width=64, depth=2, mlp_dim=128, num_heads=4, patch_size=14,
                                     image_size=224, out_dim=128))
    return {
        "pi0": Pi0Config(**full, name="pi0"),
        "pi05": Pi0Config(**full, pi05=True, max_token_len=200, name="pi05"),
        "pi0_libero": Pi0Config(**full, name="pi0_libero"),
        "pi05_libero": Pi0Config(**full, pi05=True, action_horizon=10, max_token_len=200, name="pi05_libero"),
        "dummy": Pi0Config(**dummy, name="dummy"),
        "dummy_pi05": Pi0Config(**dummy, pi05=True, max_token_len=200, name="dummy_pi05"),
        "test_tiny": Pi0Config(**tiny, action_horizon=8, max_token_len=12, dtype="float32", name="test_tiny"),
        "test_tiny_pi05": Pi0Config(**tiny, pi05=True, action_horizon=8, max_token_len=12, dtype="float32",
                                    name="test_tiny_pi05"),
        "test_small": Pi0Config(**small, action_horizon=50, max_token_len=48, name="test_small"),
        "test_small_pi05": Pi0Config(**small, pi05=True, action_horizon=10, max_token_len=200,
                                     name="test_small_pi05"),
    }


CONFIGS: dict[str, Pi0Config] = _registry()


def get_config(name: str | Pi0Config) -> Pi0Config:
    """The registered configuration ``name`` (a Pi0Config passes through unchanged).

    Raises:
      FlowlensError: unknown name, with a "did you mean" suggestion.
    """
    if isinstance(name, Pi0Config):
        return name
    if name not in CONFIGS:
        raise unknown_name_error("config", name, sorted(CONFIGS))
    return CONFIGS[name]


def config_names() -> tuple[str, ...]:
    return tuple(sorted(CONFIGS))


from flowlens.model.observation import Observation  # noqa: E402,F401  (re-exported: the model's input record)
