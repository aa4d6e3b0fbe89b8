"""Fixtures for the CLI tests: tiny rollout videos in a LIBERO-style tree, and a CLI runner.

The suite runs with ``--import-mode=importlib``, so shared builders are handed out as fixtures.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

PROMPT = "pick up the black bowl and place it on the plate"
NUM_FRAMES = 45
SIZE = 64


def scene(t: int, *, shift: int = 0) -> np.ndarray:
    """A 64×64 frame: table, a dark bowl moving right, a white plate."""
    img = np.full((SIZE, SIZE, 3), (150, 115, 80), np.uint8)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    img[(yy - 34) ** 2 + (xx - (10 + t + shift) % 50) ** 2 < 36] = (20, 20, 20)
    img[(yy - 18) ** 2 + (xx - 48) ** 2 < 64] = (235, 235, 235)
    return img


def write_mp4(path, frames: int = NUM_FRAMES, shift: int = 0):
    from flowlens.io.sources import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, [scene(t, shift=shift) for t in range(frames)], fps=10)
    return path


@pytest.fixture
def libero_tree(tmp_path, monkeypatch):
    """cwd = tmp dir holding data/libero/90/videos/rollout_task0_ep0.mp4 (45 frames) and its tasks.json."""
    write_mp4(tmp_path / "data/libero/90/videos/rollout_task0_ep0.mp4")
    (tmp_path / "data/libero/90/tasks.json").write_text(json.dumps({"0": PROMPT}))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def bare_video(tmp_path, monkeypatch):
    """cwd = tmp dir holding videos/rollout_task3_ep1.mp4 with no task list (no prompt anywhere)."""
    path = write_mp4(tmp_path / "bare/videos/rollout_task3_ep1.mp4", frames=12)
    monkeypatch.chdir(tmp_path)
    return path


@pytest.fixture
def outcome_pair(tmp_path):
    """openpi-named success and failure videos of one task (prompt and outcome in the names)."""
    name = PROMPT.replace(" ", "_")
    s = write_mp4(tmp_path / "rollouts" / f"rollout_{name}_success.mp4", frames=12)
    f = write_mp4(tmp_path / "rollouts" / f"rollout_{name}_failure.mp4", frames=12, shift=20)
    return s, f


@pytest.fixture
def cli(capsys):
    """Run ``flowlens.cli.main.main(argv)``; returns (exit code, stdout, stderr)."""
    from flowlens.cli.main import main

    def run(*argv: str):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def assert_png(path) -> None:
    from PIL import Image

    assert path.is_file(), f"{path} was not written"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 100 and im.height > 100


@pytest.fixture
def png_ok():
    return assert_png


def temp_leftovers(root) -> list:
    return [p for p in root.rglob("*") if p.name.startswith(".") and ".tmp-" in p.name]


@pytest.fixture
def leftovers():
    return temp_leftovers
