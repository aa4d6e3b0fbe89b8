"""``flowlens demo``: every command on a generated success and failure episode (embedded model or
synthetic)."""

from __future__ import annotations

import re

import pytest

from flowlens.pipeline.backends import builtin_available


@pytest.mark.slow
def test_demo_writes_every_figure_type(tmp_path, cli, png_ok, leftovers):
    out = tmp_path / "demo"
    code, stdout, err = cli("demo", "--output-dir", out, "--frames", "4", "--checkpoint", "synthetic", "--no-progress")
    assert code == 0, err
    for kind in ("image", "text", "combined", "evolution", "steps", "heads", "actions"):
        png_ok(out / "single" / f"attention_{kind}.png")
    png_ok(out / "compare.png")
    (episode,) = [p for p in (out / "episode").iterdir() if p.is_dir()]
    assert (episode / "attention_over_time.mp4").stat().st_size > 0
    assert (episode / "attention_over_time.gif").stat().st_size > 0
    png_ok(episode / "attention_evolution_frames.png")
    assert (out / "report.html").stat().st_size > 10_000
    assert "wrote" in stdout and str(out / "report.html") in stdout
    assert "SYNTHETIC attention" in stdout  # says clearly that no model was used
    starts = re.findall(r"^  at +(\d+\.\d) s · \[(\d)/4\]", stdout, flags=re.M)  # start times, said as such
    assert [s for _, s in starts] == ["1", "2", "3", "4"]
    assert [float(t) for t, _ in starts] == sorted(float(t) for t, _ in starts)
    assert not leftovers(out)


@pytest.mark.slow
@pytest.mark.skipif(not builtin_available(), reason="the embedded model (flowlens.tasks) is not installed")
def test_seed_single_command_on_the_embedded_model(libero_tree, cli, png_ok):
    code, _, err = cli(
        "single",
        "--video",
        "data/libero/90/videos/rollout_task0_ep0.mp4",
        "--frame-idx",
        "10",
        "--prompt",
        "pick up the black bowl and place it on the plate",
        "--checkpoint",
        "builtin:tabletop",
        "--output",
        "attention.png",
        "--layers",
        "0",
        "8",
        "17",
        "--viz-type",
        "all",
    )
    assert code == 0, err
    for kind in ("image", "text", "combined", "evolution"):
        png_ok(libero_tree / f"attention_{kind}.png")


@pytest.mark.slow
@pytest.mark.skipif(not builtin_available(), reason="the embedded model (flowlens.tasks) is not installed")
def test_seed_episode_command_on_the_embedded_model(libero_tree, cli, png_ok):
    argv = "--data-root data/libero --group 90 --episode-idx 0 --frames 0 10 20 30 40"
    argv += " --checkpoint builtin:tabletop"
    code, _, err = cli(
        "--mode",
        "episode",
        *argv.split(),
        "--output-dir",
        "attention_viz_output/",
        "--viz-type",
        "all",
        "--no-progress",
    )
    assert code == 0, err
    root = libero_tree / "attention_viz_output" / "90_rollout_task0_ep0"
    for i in (0, 10, 20, 30, 40):
        for kind in ("image", "text", "combined", "evolution"):
            png_ok(root / f"frame_{i:04d}" / f"attention_{kind}.png")
    assert (root / "attention_over_time.mp4").stat().st_size > 0
