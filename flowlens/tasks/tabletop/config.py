"""The configuration of the embedded default model: a tiny Pi0 for the tabletop task.

Same architecture and code path as openpi's Pi0 (:class:`flowlens.model.pi0.Pi0Model`): a
SigLIP-style patch encoder (patch 14), a PaliGemma-style Gemma expert and an action expert, both
**18 layers with 8 query heads sharing 1 key/value head** (head size 16), flow matching with 10
Euler steps. Only the widths are small, so it trains on a CPU.

Choices:

* **Pi0.5, as ``pi05_libero``**: 10 actions per chunk, time through adaRMS, quantile
  normalisation, and the state neither as a token nor in the prompt (the Pi0-format prompt,
  ``discrete_state=False``). The policy must therefore read the gripper's position, height and
  opening from the cameras, which forces the visual pathway to carry the task: a tiny Pi0 trained
  from scratch with a state token learned to act from the state alone and ignored the images
  (blanking both cameras changed its chunks by cos 0.95) within a CPU budget.
* **Two cameras** (``base_0_rgb``, ``left_wrist_0_rgb``): LIBERO's third camera is always masked.
* **56 × 56 input, 4 × 4 patches per camera**; frames on disk are larger (base 192×144, 4:3, so
  it is letterboxed; wrist 96×96), exactly as openpi letterboxes 256-px LIBERO frames into 224.
* **A 72-piece tokenizer** (:mod:`flowlens.tasks.tabletop.tokenizer`), prompts padded to 20.
* **action_dim 8**: the task's 4-d state and actions are zero-padded to 8 (openpi pads LIBERO's
  8-d state and 7-d actions to 32); fewer padded dimensions leave more of the loss to the task.
* **float32** compute (exact on CPU; openpi computes in bfloat16).

Prefix: 2 × 16 patches + 20 prompt tokens = 52; suffix: 10 actions.
"""

from __future__ import annotations

from flowlens.model.config import GemmaConfig, Pi0Config, SiglipConfig
from flowlens.tasks.tabletop.tokenizer import VOCAB_SIZE

NAME = "tabletop"
IMAGE_SIZE = 56
MAX_TOKEN_LEN = 20
CAMERAS = ("base_0_rgb", "left_wrist_0_rgb")
ASSET_ID = "flowlens/tabletop"


def tabletop_config(vocab_size: int = VOCAB_SIZE) -> Pi0Config:
    """The Pi0Config of ``builtin:tabletop``."""
    llm = GemmaConfig(width=64, depth=18, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16)
    expert = GemmaConfig(width=32, depth=18, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=16)
    siglip = SiglipConfig(width=64, depth=2, mlp_dim=128, num_heads=4, patch_size=14, image_size=IMAGE_SIZE, out_dim=64)
    return Pi0Config(
        paligemma=llm,
        action_expert=expert,
        siglip=siglip,
        pi05=True,
        action_dim=8,
        action_horizon=10,
        max_token_len=MAX_TOKEN_LEN,
        num_steps=10,
        dtype="float32",
        cameras=CAMERAS,
        vocab_size=vocab_size,
        name=NAME,
    )
