"""The openpi layouts: Pi0 / Pi0.5 token sequences built without a model or a tokenizer.

``openpi_layout`` lays out openpi's Pi0-family sequence — cameras × grid patches (block 0), the
prompt (block 0), for Pi0 the state token (block 1), then the actions (the last block) — and
``pi0_layout`` / ``pi05_layout`` give the exact LIBERO layouts (3 cameras × 256 patches with the
third masked, 48 or 200 text tokens, a state token for Pi0 only, 50 or 10 actions). Prompts are
split into pieces by ``synthetic_pieces`` (the Pi0 format, stable fake ids) unless a real
``TextSegment`` from the tokenizer is given. The model adapter builds the same layouts from the
real inputs; synthetic data, tests and the CLI's synthetic backend use these.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from flowlens.core.frame import FrameTransform
from flowlens.core.layout import TokenLayout
from flowlens.core.segments import WORD_START, ActionSegment, ImageSegment, StateSegment, TextSegment, TokenKind
from flowlens.errors import FlowlensError

__all__ = ["PI0_CAMERAS", "openpi_layout", "pi05_layout", "pi0_layout", "synthetic_pieces"]

PI0_CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")


def synthetic_pieces(prompt: str, max_len: int) -> tuple[list[int], list[str], list[bool]]:
    """Tokenise ``prompt`` the way the Pi0 format lays it out, without a real tokenizer.

    BOS, one piece per word ("▁word"; words longer than 5 letters split into two pieces so sub-word
    merging is exercised), "\\n", then padding to ``max_len`` (truncated with the mask all True,
    as openpi does). Ids are stable hashes, not PaliGemma ids.
    """
    pieces = ["<bos>"]
    for word in prompt.strip().replace("_", " ").split():
        if len(word) > 5:
            pieces += [WORD_START + word[:3], word[3:]]
        else:
            pieces.append(WORD_START + word)
    pieces.append("\n")
    pieces = pieces[:max_len]
    valid = [True] * len(pieces) + [False] * (max_len - len(pieces))
    pieces = pieces + ["<pad>"] * (max_len - len(pieces))
    ids = [2 if p == "<bos>" else 0 if p == "<pad>" else 108 if p == "\n"
           else 1000 + sum(map(ord, p)) % 250000 for p in pieces]
    return ids, pieces, valid


def openpi_layout(
    *,
    variant: str,
    prompt: str | TextSegment = "pick up the black bowl and place it on the plate",
    max_token_len: int,
    action_horizon: int,
    cameras: Sequence[str] = PI0_CAMERAS,
    camera_valid: Sequence[bool] = (True, True, False),
    grid: tuple[int, int] = (16, 16),
    patch_size: int = 14,
    transforms: Sequence[FrameTransform] | None = None,
    state_token: bool,
) -> TokenLayout:
    """The openpi Pi0-family layout: cameras × grid patches, text, [state], actions."""
    if len(camera_valid) != len(cameras):
        raise FlowlensError(
            f"camera_valid needs one flag per camera ({len(cameras)}), got {len(camera_valid)}."
        )
    transforms = list(transforms) if transforms is not None else [FrameTransform()] * len(cameras)
    segs = []  # the segments in order
    pos = 0
    size = grid[0] * grid[1]
    for name, ok, tf in zip(cameras, camera_valid, transforms, strict=True):
        segs.append(ImageSegment(kind=TokenKind.IMAGE, name=name, start=pos, stop=pos + size, block=0,
                                 grid=tuple(grid), patch_size=patch_size, valid=bool(ok), transform=tf))
        pos += size
    if isinstance(prompt, TextSegment):
        text = dataclasses.replace(prompt, start=pos, stop=pos + prompt.size, block=0)
    else:
        ids, pieces, valid = synthetic_pieces(prompt, max_token_len)
        text = TextSegment.from_pieces(start=pos, token_ids=ids, pieces=pieces, valid=valid)
    segs.append(text)
    pos = text.stop
    prefix_len = pos
    block = 1
    if state_token:
        segs.append(StateSegment(kind=TokenKind.STATE, name="state", start=pos, stop=pos + 1, block=block))
        pos, block = pos + 1, block + 1
    segs.append(ActionSegment(kind=TokenKind.ACTION, name="actions", start=pos, stop=pos + action_horizon,
                              block=block))
    return TokenLayout(segments=tuple(segs), prefix_len=prefix_len, variant=variant)


def pi0_layout(prompt: str | TextSegment = "pick up the black bowl and place it on the plate", *,
               max_token_len: int = 48, action_horizon: int = 50, **kwargs) -> TokenLayout:
    """The `pi0_libero` layout: 3×256 patches (third camera masked), 48 text tokens, state, 50 actions
    (n = 867, prefix 816)."""
    return openpi_layout(variant="pi0", prompt=prompt, max_token_len=max_token_len,
                         action_horizon=action_horizon, state_token=True, **kwargs)


def pi05_layout(prompt: str | TextSegment = "pick up the black bowl and place it on the plate", *,
                max_token_len: int = 200, action_horizon: int = 10, **kwargs) -> TokenLayout:
    """The `pi05_libero` layout: 3×256 patches (third camera masked), 200 text tokens, no state token,
    10 actions (n = 978, prefix 968)."""
    return openpi_layout(variant="pi05", prompt=prompt, max_token_len=max_token_len,
                         action_horizon=action_horizon, state_token=False, **kwargs)
