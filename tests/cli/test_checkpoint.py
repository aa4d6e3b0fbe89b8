"""``--checkpoint DIR``: an openpi checkpoint directory (orbax params/) through the real Flax model.

The checkpoint is a randomly initialised ``test_tiny`` Pi0 (18 layers, 8 heads, tiny widths) written
in openpi's layout by ``flowlens.model.checkpoint.save_openpi_checkpoint``; the tokenizer is any
SentencePiece model (the tabletop task's, which keeps PaliGemma's special ids).
"""

from __future__ import annotations

import pytest

pytest.importorskip("orbax.checkpoint")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import jax

    from flowlens.model import Pi0Model, get_config
    from flowlens.model.checkpoint import save_openpi_checkpoint

    tasks = pytest.importorskip("flowlens.tasks.tabletop.tokenizer")
    root = tmp_path_factory.mktemp("ckpt")
    params = Pi0Model(get_config("test_tiny")).init(jax.random.key(0))
    save_openpi_checkpoint(params, root / "pi0_tiny")
    (root / "tokenizer.model").write_bytes(tasks.train_tokenizer())
    return root / "pi0_tiny", root / "tokenizer.model"


@pytest.mark.slow
def test_single_on_an_openpi_checkpoint(libero_tree, cli, png_ok, tiny_checkpoint):
    ckpt, tok = tiny_checkpoint
    argv = ["--video", "data/libero/90/videos/rollout_task0_ep0.mp4", "--frame-idx", "10"]
    argv += ["--prompt", "put the red cube on the green plate", "--config", "test_tiny"]
    argv += ["--checkpoint", str(ckpt), "--tokenizer", str(tok)]
    figures = ["--layers", "0", "17", "--viz-type", "image", "evolution", "--output", "r/"]
    code, out, err = cli("single", *argv, *figures)
    assert code == 0, err
    assert "model: test_tiny" in out
    png_ok(libero_tree / "r" / "attention_image.png")
    png_ok(libero_tree / "r" / "attention_evolution.png")
    code, _, err = cli("single", *argv, "--layers", "18", "--output", "r/")
    assert code == 2 and "layer 18 out of range: the model has 18 layers" in err


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["openpi", "lerobot"])
def test_single_on_a_pytorch_checkpoint(libero_tree, cli, png_ok, tiny_checkpoint, tmp_path, layout):
    import jax

    from flowlens.model import Pi0Model, get_config
    from flowlens.model.torch_checkpoint import save_torch_checkpoint

    _, tok = tiny_checkpoint
    cfg = get_config("test_tiny")
    save_torch_checkpoint(Pi0Model(cfg).init(jax.random.key(0)), cfg, tmp_path / layout, layout=layout)
    argv = ["--video", "data/libero/90/videos/rollout_task0_ep0.mp4", "--frame-idx", "10"]
    argv += ["--prompt", "put the red cube on the green plate", "--config", "test_tiny"]
    target = tmp_path / layout / ("model.safetensors" if layout == "lerobot" else "")
    argv += ["--checkpoint", str(target), "--tokenizer", str(tok)]
    code, out, err = cli("single", *argv, "--layers", "0", "--viz-type", "image", "--output", "r/")
    assert code == 0, err
    assert "model: test_tiny" in out
    png_ok(libero_tree / "r" / "attention_image.png")
