"""``flowlens episode`` end to end: the legacy seed command, resuming, MP4 + GIF written without ffmpeg."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

SEED = shlex.split(
    "--data-root data/libero --group 90 --episode-idx 0 --frames 0 10 20 30 40 "
    "--checkpoint synthetic --output-dir attention_viz_output/ --viz-type all"
)
FOUR = ("image", "text", "combined", "evolution")


def _check_video(path, frames: int) -> None:
    import av
    from PIL import Image

    with av.open(str(path)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == frames and decoded[0].ndim == 3
    gif = path.with_suffix(".gif")
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == frames


@pytest.mark.slow
def test_seed_episode_command(libero_tree, cli, png_ok, leftovers):
    code, out, err = cli("--mode", "episode", *SEED)
    assert code == 0, err
    root = libero_tree / "attention_viz_output" / "90_rollout_task0_ep0"  # one folder per episode
    for i in (0, 10, 20, 30, 40):
        for kind in FOUR:
            png_ok(root / f"frame_{i:04d}" / f"attention_{kind}.png")
    _check_video(root / "attention_over_time.mp4", 5)
    png_ok(root / "attention_evolution_frames.png")
    summary = json.loads((root / "episode.json").read_text())
    assert summary["frames"] == [0, 10, 20, 30, 40] and summary["skipped"] == []
    assert summary["prompt"] == "pick up the black bowl and place it on the plate"
    assert "frames" in err  # the progress bar (stderr)
    assert not leftovers(root)


def test_resume_skips_finished_frames(libero_tree, cli):
    argv = shlex.split(
        "episode --video data/libero/90/videos/rollout_task0_ep0.mp4 --frames 0 5 9 "
        "--checkpoint synthetic --viz-type image evolution --layers 17 --output-dir ep "
        "--no-progress --no-gif"
    )
    code, _, err = cli(*argv)
    assert code == 0, err
    root = libero_tree / "ep" / "90_rollout_task0_ep0"
    # An interrupted run: frame 5 lost its scores file (written last), so only frame 5 is redone.
    (root / "frame_0005" / "scores.npz").unlink()
    mtime = (root / "frame_0009" / "attention_image.png").stat().st_mtime_ns
    code, out, err = cli(*argv)
    assert code == 0, err
    assert "2 of 3 frames were already written" in out
    assert (root / "frame_0009" / "attention_image.png").stat().st_mtime_ns == mtime
    assert json.loads((root / "episode.json").read_text())["skipped"] == [0, 9]
    # Other settings do not reuse the cached frames.
    code, out, err = cli(
        *argv[:9],
        "--viz-type",
        "image",
        "--layers",
        "17",
        "--method",
        "raw",
        "--output-dir",
        "ep",
        "--no-progress",
        "--no-video",
    )
    assert code == 0, err
    assert "already written" not in out


def test_episode_frame_step_and_bad_frames(libero_tree, cli, png_ok):
    code, out, err = cli(
        "episode",
        "--video",
        "data/libero/90/videos/rollout_task0_ep0.mp4",
        "--frame-step",
        "20",
        "--checkpoint",
        "synthetic",
        "--viz-type",
        "image",
        "--layers",
        "17",
        "--output-dir",
        "ep",
        "--no-gif",
        "--no-progress",
        "--fps",
        "4",
    )
    assert code == 0, err
    for i in (0, 20, 40):
        png_ok(libero_tree / "ep" / "90_rollout_task0_ep0" / f"frame_{i:04d}" / "attention_image.png")
    assert (libero_tree / "ep" / "90_rollout_task0_ep0" / "attention_over_time.mp4").is_file()
    assert not (libero_tree / "ep" / "90_rollout_task0_ep0" / "attention_over_time.gif").exists()
    code, _, err = cli(
        "episode",
        "--video",
        "data/libero/90/videos/rollout_task0_ep0.mp4",
        "--frames",
        "0",
        "99",
        "--checkpoint",
        "synthetic",
        "--output-dir",
        "ep2",
    )
    assert code == 2 and "frame 99 out of range" in err and "0–44" in err
    assert not (libero_tree / "ep2").exists()


def test_capture_store_is_reused_instead_of_the_model(libero_tree, cli, png_ok, monkeypatch):
    from flowlens.io.store import open_store
    from flowlens.pipeline.backends import SyntheticBackend

    argv = shlex.split(
        "episode --video data/libero/90/videos/rollout_task0_ep0.mp4 --frames 0 7 --checkpoint "
        "synthetic --viz-type evolution --layers 17 --output-dir ep --store captures "
        "--no-progress --no-video"
    )
    code, _, err = cli(*argv)
    assert code == 0, err
    assert len(open_store(libero_tree / "captures", mode="r")) == 2

    def no_model(*args, **kwargs):
        raise AssertionError("the model ran although the store holds the captures")

    monkeypatch.setattr(SyntheticBackend, "capture", no_model)
    code, out, err = cli(*argv[:-4], "--method", "raw", "--store", "captures", "--no-progress", "--no-video")
    assert code == 0, err
    assert "2 taken from the store" in out
    png_ok(libero_tree / "ep" / "90_rollout_task0_ep0" / "frame_0007" / "attention_evolution.png")


def test_store_resume_gives_what_an_uninterrupted_run_gives(libero_tree, cli):
    # A run interrupted after frame 7's capture reached the store but before its scores were written
    # resumes from the stored (float16) copy; the uninterrupted run must have used that same copy.
    import numpy as np

    base = (
        "episode --video data/libero/90/videos/rollout_task0_ep0.mp4 --frames 0 7 --checkpoint synthetic "
        "--viz-type evolution --layers 17 --no-progress --no-video"
    )
    for name in ("whole", "resumed"):
        code, _, err = cli(*shlex.split(f"{base} --output-dir {name} --store {name}_captures"))
        assert code == 0, err
    frame = libero_tree / "resumed" / "90_rollout_task0_ep0" / "frame_0007"
    (frame / "scores.npz").unlink()
    code, out, err = cli(*shlex.split(f"{base} --output-dir resumed --store resumed_captures"))
    assert code == 0, err
    assert "1 taken from the store" in out
    with (
        np.load(libero_tree / "whole" / "90_rollout_task0_ep0" / "frame_0007" / "scores.npz") as a,
        np.load(frame / "scores.npz") as b,
    ):
        assert a["scores"].tobytes() == b["scores"].tobytes()


def test_a_rerun_leaves_exactly_what_its_manifest_lists(libero_tree, cli):
    base = (
        "episode --video data/libero/90/videos/rollout_task0_ep0.mp4 --checkpoint synthetic --layers 17 "
        "--output-dir ep --no-progress"
    )
    code, _, err = cli(*shlex.split(base + " --frames 0 5 9 --viz-type all"))
    assert code == 0, err
    root = libero_tree / "ep" / "90_rollout_task0_ep0"
    mine = root / "frame_0005" / "notes.txt"  # a file that is not flowlens's: never touched
    mine.write_text("keep me")
    code, out, err = cli(*shlex.split(base + " --frames 0 5 --viz-type image --method raw --no-video"))
    assert code == 0, err
    summary = json.loads((root / "episode.json").read_text())
    listed = {p for per in summary["frame_files"].values() for p in per.values()}
    listed |= set(summary["episode_files"].values())
    listed = {Path(p).resolve() for p in listed}
    listed |= {(root / f"frame_{i:04d}" / "scores.npz").resolve() for i in summary["frames"]}
    on_disk = {p.resolve() for p in root.rglob("*") if p.is_file() and p.name not in ("episode.json", "notes.txt")}
    assert on_disk == listed
    assert sorted(p.name for p in (root / "frame_0000").iterdir()) == ["attention_image.png", "scores.npz"]
    assert not (root / "frame_0009").exists() and not (root / "attention_over_time.mp4").exists()
    assert mine.read_text() == "keep me"
    assert "stale files" in out
    code, out, err = cli(*shlex.split(base + " --frames 0 5 --viz-type image --method raw --no-video"))
    assert code == 0, err
    assert "0 frames × 1 figures written (2 kept from the earlier run)" in out
