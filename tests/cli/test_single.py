"""``flowlens single`` end to end through ``main([...])``: the legacy seed command, --mode, options."""

from __future__ import annotations

import shlex

import pytest

SEED = shlex.split(
    "--video data/libero/90/videos/rollout_task0_ep0.mp4 --frame-idx 10 --prompt "
    "'pick up the black bowl and place it on the plate' --checkpoint synthetic --output "
    "attention.png --layers 0 8 17 --viz-type all"
)
FOUR = ("attention_image.png", "attention_text.png", "attention_combined.png", "attention_evolution.png")


def test_seed_single_command_writes_the_four_pngs(libero_tree, cli, png_ok, leftovers):
    code, out, err = cli("single", *SEED)
    assert code == 0, err
    for name in FOUR:
        png_ok(libero_tree / name)
    assert "wrote image" in out and "attention_evolution.png" in out
    assert not leftovers(libero_tree)


def test_mode_spelling_is_the_same_command(libero_tree, cli, png_ok):
    argv = [a if a != "all" else "image" for a in SEED]
    code, _, err = cli("--mode", "single", *argv[:-2], "--output", "legacy.png", "--viz-type", "image")
    assert code == 0, err
    png_ok(libero_tree / "legacy.png")  # one type + a file name: exactly that file
    code, _, err = cli(*argv[:-2], "--mode=single", "--output", "eq.png", "--viz-type", "image")
    assert code == 0, err
    png_ok(libero_tree / "eq.png")


@pytest.mark.parametrize(
    "extra",
    [
        ["--method", "raw", "--query", "actions", "--heads", "1", "3"],
        ["--method", "rollout", "--query", "state", "--step", "2"],
        ["--method", "raw", "--query", "last", "--step", "all"],
    ],
    ids=["raw-actions-heads", "rollout-state-step2", "raw-last-allsteps"],
)
def test_method_query_heads_step(libero_tree, cli, png_ok, extra):
    code, out, err = cli(
        "single",
        "--video",
        "data/libero/90/videos/rollout_task0_ep0.mp4",
        "--frame-idx",
        "3",
        "--checkpoint",
        "synthetic",
        "--layers",
        "0",
        "17",
        "--viz-type",
        "image",
        "--output",
        "x.png",
        *extra,
    )
    assert code == 0, err
    png_ok(libero_tree / "x.png")  # prompt came from data/libero/90/tasks.json


def test_extra_viz_types(libero_tree, cli, png_ok):
    argv = "--checkpoint synthetic --method raw --layers 0 17 --viz-type steps heads actions --output out/"
    code, _, err = cli("single", "--video", "data/libero/90/videos/rollout_task0_ep0.mp4", *argv.split())
    assert code == 0, err
    for kind in ("steps", "heads", "actions"):
        png_ok(libero_tree / "out" / f"attention_{kind}.png")
