"""Bad input → exit code 2, one line on stderr naming the problem and the fix, no traceback, no files."""

from __future__ import annotations

import os

import pytest

VIDEO = "data/libero/90/videos/rollout_task0_ep0.mp4"


def _single(*extra: str) -> list[str]:
    return ["single", "--video", VIDEO, "--checkpoint", "synthetic", "--output", "out/attention.png", *extra]


def _one_clean_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("flowlens: error: ")
    assert "Traceback" not in err
    return lines[0]


CASES = {
    "missing-video": (
        ["single", "--video", "data/libero/90/videos/nope.mp4", "--checkpoint", "synthetic"],
        ["nope.mp4", "does not exist", "rollout_task0_ep0.mp4"],
    ),
    "frame-out-of-range": (_single("--frame-idx", "45"), ["frame 45 out of range", "45 frames", "0–44"]),
    "layers-out-of-range": (_single("--layers", "0", "18"), ["layer 18 out of range", "18 layers", "0–17"]),
    "heads-out-of-range": (_single("--heads", "8"), ["head 8 out of range", "8 heads"]),
    "step-out-of-range": (_single("--step", "10"), ["step 10 out of range", "10 denoising steps"]),
    "bad-query": (_single("--query", "acton:0"), ["acton:0", "action:0"]),
    "missing-checkpoint": (
        ["single", "--video", VIDEO, "--checkpoint", "checkpoints/pi0_model.ckpt"],
        ["checkpoints/pi0_model.ckpt", "does not exist", "synthetic"],
    ),
    "episode-idx-out-of-range": (
        [
            "episode",
            "--data-root",
            "data/libero",
            "--group",
            "90",
            "--episode-idx",
            "3",
            "--checkpoint",
            "synthetic",
        ],
        ["--episode-idx 3 out of range", "1 episodes"],
    ),
    "bad-output-suffix": (_single("--output", "attention.txt"), [".png"]),
    "unknown-mode": (["--mode", "singel", "--video", VIDEO, "--checkpoint", "synthetic"], ["'single'"]),
}


@pytest.mark.parametrize("argv,expected", list(CASES.values()), ids=list(CASES))
def test_clear_one_line_errors(libero_tree, cli, leftovers, argv, expected):
    code, out, err = cli(*argv)
    assert code == 2
    line = _one_clean_line(err)
    for part in expected:
        assert part in line, line
    assert not (libero_tree / "out").exists() or not any((libero_tree / "out").iterdir())
    assert not list(libero_tree.glob("*.png")) and not leftovers(libero_tree)


def test_checkpoint_that_is_a_file_or_unreadable(libero_tree, cli):
    ckpt = libero_tree / "checkpoints" / "pi0_model.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"\x00not a checkpoint")
    code, _, err = cli(*_single(), "--checkpoint", "checkpoints/pi0_model.ckpt")
    assert code == 2
    assert "is a file" in _one_clean_line(err) and "checkpoint directories" in err
    bad = libero_tree / "checkpoints" / "broken"
    (bad / "params").mkdir(parents=True)
    (bad / "params" / "garbage.bin").write_bytes(b"\x01\x02")
    (bad / "params" / "_METADATA").write_bytes(b"\x01\x02")  # looks like orbax; only reading it fails
    code, _, err = cli(*_single(), "--checkpoint", str(bad), "--tokenizer", "nope.model")
    assert code == 2  # the tokenizer is checked before the (slow) checkpoint load
    line = _one_clean_line(err)
    assert "--tokenizer 'nope.model' does not exist" in line and "paligemma_tokenizer.model" in line
    (libero_tree / "tok.model").write_bytes(b"\x00")
    code, _, err = cli(*_single(), "--checkpoint", str(bad), "--tokenizer", "tok.model")
    assert code == 2
    line = _one_clean_line(err)
    assert "could not read checkpoint" in line and str(bad) in line and "params" in line


def test_prompt_missing_names_the_flag(bare_video, cli):
    code, _, err = cli("single", "--video", str(bare_video), "--checkpoint", "synthetic")
    assert code == 2
    line = _one_clean_line(err)
    assert "no prompt" in line and "--prompt" in line and "tasks.json" in line
    code, _, err = cli(
        "single",
        "--video",
        str(bare_video),
        "--checkpoint",
        "synthetic",
        "--prompt",
        "put it there",
        "--viz-type",
        "evolution",
        "--output",
        "e.png",
        "--layers",
        "17",
    )
    assert code == 0, err


def test_argparse_usage_errors_exit_2(libero_tree, cli):
    code, _, err = cli("single", "--video", VIDEO)  # --checkpoint is required
    assert code == 2 and "--checkpoint" in err
    code, _, _ = cli("single", "--video", VIDEO, "--checkpoint", "synthetic", "--layers", "x")
    assert code == 2
    code, _, _ = cli()
    assert code == 2
    code, out, _ = cli("--help")
    assert code == 0 and "single" in out and "episode" in out and "demo" in out


def test_empty_prompt_and_compare_name_only_real_flags(bare_video, cli, tmp_path):
    code, _, err = cli("single", "--video", str(bare_video), "--checkpoint", "synthetic", "--prompt", "")
    assert code == 2 and "--prompt is empty" in _one_clean_line(err)
    code, _, err = cli(
        "compare", "--success", bare_video, "--failure", bare_video, "--checkpoint", "synthetic",
        "--output", tmp_path / "c.png",
    )
    line = _one_clean_line(err)
    assert code == 2 and "--prompt" in line and "--success-prompt" not in line and "--failure-prompt" not in line


@pytest.mark.parametrize("command", ["single", "episode", "compare", "report"])
def test_unwritable_output_is_found_before_the_model_runs(libero_tree, cli, monkeypatch, command):
    import flowlens.pipeline.backends as backends

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr(backends, "load_backend", no_model)
    (libero_tree / "blocker").write_text("a file where a folder is needed")
    video = "data/libero/90/videos/rollout_task0_ep0.mp4"
    common = ["--checkpoint", "synthetic"]
    argv = {
        "single": ["--video", video, "--output", "blocker/sub/a.png"],
        "episode": ["--video", video, "--output-dir", "blocker/sub", "--frames", "0"],
        "compare": ["--success", video, "--failure", video, "--output", "blocker/sub/c.png"],
        "report": ["--video", video, "--output", "blocker/sub/r.html"],
    }[command]
    code, _, err = cli(command, *argv, *common)
    line = _one_clean_line(err)
    assert code == 2 and "blocker/sub" in line and "is a file, not a folder" in line, line
    assert ".tmp" not in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_named(libero_tree, cli):
    ro = libero_tree / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    video = "data/libero/90/videos/rollout_task0_ep0.mp4"
    code, _, err = cli("single", "--video", video, "--checkpoint", "synthetic", "--output", "ro/a.png")
    assert code == 2 and "'ro'" in err and "not writable" in err


def test_a_folder_without_params_is_named_before_the_tokenizer(libero_tree, cli):
    bad = libero_tree / "checkpoints" / "junk"
    (bad / "params").mkdir(parents=True)
    (bad / "params" / "garbage.bin").write_bytes(b"\x01\x02")
    code, _, err = cli(*_single(), "--checkpoint", str(bad))  # and no tokenizer anywhere
    line = _one_clean_line(err)
    assert code == 2 and "could not read checkpoint" in line and "is not an orbax checkpoint" in line
    assert "tokenizer" not in line
