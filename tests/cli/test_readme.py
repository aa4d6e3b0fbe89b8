"""The README's ``flowlens`` commands run as written (checkpoint swapped for the synthetic one)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[list[str]]:
    """The ``flowlens ...`` lines of the README's command block, continuation lines joined."""
    text = README.read_text(encoding="utf-8")
    block = text[text.index("## The `flowlens` command") :]
    block = block[block.index("```bash") + len("```bash") : block.index("```\n", block.index("```bash") + 7)]
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip().startswith("flowlens")]


def write_mp4(path: Path, frames: int = 45, shift: int = 0) -> None:
    """A 64×64 rollout video: a dark block moving right on a table."""
    import numpy as np

    from flowlens.io.sources import write_video

    def frame(t):
        img = np.full((64, 64, 3), (150, 115, 80), np.uint8)
        x = (10 + t + shift) % 50
        img[30:38, x : x + 8] = 20
        return img

    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, [frame(t) for t in range(frames)], fps=10)


def offline(argv: list[str]) -> list[str]:
    """The command with ``--checkpoint synthetic`` and no ``--tokenizer`` (no weights in the tests)."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg in ("--checkpoint", "--tokenizer"):
            skip = True
            if arg == "--checkpoint":
                out += ["--checkpoint", "synthetic"]
            continue
        out.append(arg)
    return out


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path, monkeypatch, cli):
    commands = readme_commands()
    assert [c[1] for c in commands] == ["--mode", "episode", "compare", "report"]
    monkeypatch.chdir(tmp_path)
    for argv in commands:
        for arg in argv:
            if arg.endswith(".mp4"):
                write_mp4(Path(arg), shift=20 if "failure" in arg else 0)
    write_mp4(Path("data/libero/90/videos/rollout_task0_ep0.mp4"))
    # the task list the README documents for rollout_task<i>_ep<j> names
    Path("data/libero/90/tasks.json").write_text(json.dumps({"0": "pick up the black bowl and place it on the plate"}))
    for argv in commands:
        args = offline(argv[1:])
        if args[0] == "episode":
            args += ["--no-progress", "--layers", "17", "--viz-type", "image"]  # keep the test quick
        if args[0] == "report":
            args += ["--no-progress"]
        code, out, err = cli(*args)
        assert code == 0, f"{' '.join(argv)}\n{err}"
    assert Path("report.html").is_file() and Path("compare.png").is_file()
    assert Path("attention_image.png").is_file()
    summary = json.loads(Path("attention_viz_output/90_rollout_task0_ep0/episode.json").read_text())
    assert summary["prompt"] == "pick up the black bowl and place it on the plate"


def test_readme_quickstart_draws_a_figure(tmp_path, monkeypatch):
    text = README.read_text(encoding="utf-8")
    block = text[text.index("## Quickstart") :]
    code = block[block.index("```python") + len("```python") : block.index("```\n", block.index("```python") + 9)]
    monkeypatch.chdir(tmp_path)
    import matplotlib

    matplotlib.use("Agg")
    exec(compile(code, "README quickstart", "exec"), {"__name__": "readme"})
    from PIL import Image

    with Image.open(tmp_path / "quickstart.png") as im:
        assert im.size[0] > 300 and im.size[1] > 200
