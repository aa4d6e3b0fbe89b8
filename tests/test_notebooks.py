"""Every notebook in notebooks/ (jupytext py:percent sources) runs top to bottom as a notebook.

The ``.py`` files are the only stored form: the test converts each with jupytext, executes it with
nbclient in a fresh kernel (a time limit per cell), and fails on any error or when a notebook that
draws shows no ``image/png`` output. Notebooks use the public API only (no name starting with an
underscore, checked on the parsed source).
"""

import ast
import os
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parents[1] / "notebooks").glob("*.py"))
CELL_TIMEOUT_S = 300


def private_names(source: str) -> list[str]:
    """Names, attributes and imported names starting with an underscore (dunders apart)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.ImportFrom):
            names = (node.module or "").split(".") + [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names = [part for a in node.names for part in a.name.split(".")]
        found += [n for n in names if n.startswith("_") and n != "_" and not (n.startswith("__") and n.endswith("__"))]
    return found


def test_private_names_are_found():
    source = "import a._b\nfrom c import _d\nx._e\n_f = 1\ny.__class__\nfor _ in x: pass\n"
    assert sorted(private_names(source)) == ["_b", "_d", "_e", "_f"]


def test_notebooks_exist_and_use_only_public_names():
    assert [p.stem for p in NOTEBOOKS] == ["01_quickstart", "02_heads", "03_routing", "04_trust", "05_your_checkpoint"]
    for path in NOTEBOOKS:
        assert private_names(path.read_text(encoding="utf-8")) == [], path.name


def own_checkpoint(folder: pathlib.Path) -> dict:
    """The inputs of 05_your_checkpoint: a randomly initialised ``test_tiny`` Pi0 written in openpi's
    layout, a SentencePiece tokenizer with PaliGemma's special ids, a LIBERO-named rollout video."""
    import jax

    from flowlens.io.sources import write_video
    from flowlens.model import Pi0Model, get_config, save_openpi_checkpoint
    from flowlens.pipeline.demo import synthetic_episode
    from flowlens.tasks.tabletop.tokenizer import train_tokenizer

    pytest.importorskip("orbax.checkpoint")
    params = Pi0Model(get_config("test_tiny")).init(jax.random.key(0))
    checkpoint = save_openpi_checkpoint(params, folder / "pi0_tiny")
    (folder / "tokenizer.model").write_bytes(train_tokenizer())
    prompt, video = synthetic_episode(True, seed=0, frames=12)
    path = folder / f"rollout_{prompt.replace(' ', '_')}_success.mp4"
    write_video(path, video, fps=10)
    return {"CHECKPOINT": str(checkpoint), "TOKENIZER": str(folder / "tokenizer.model"), "VIDEO": str(path),
            "CONFIG": "test_tiny", "FRAMES": (0, 5, 11)}


def inject_parameters(notebook, values: dict) -> None:
    """Papermill-style: a cell setting ``values`` right after the cell tagged "parameters"."""
    import nbformat

    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    source = "\n".join(f"{k} = {v!r}" for k, v in values.items())
    notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(source))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = jupytext.read(path)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    if path.stem == "05_your_checkpoint":
        inject_parameters(notebook, own_checkpoint(tmp_path))
    # the kernel imports this checkout's flowlens and draws inline (no Agg backend inherited)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["PYTHONPATH"] = os.pathsep.join([str(path.parents[1]), os.environ.get("PYTHONPATH", "")])
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3")
    client.execute(cwd=str(tmp_path), env=env)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    drawing = [c for c in code if "plt.show()" in c.source]
    assert drawing, f"{path.name} draws no figure"
    for cell in drawing:
        outputs = cell.get("outputs", [])
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name}: no figure shown by {cell.source[:80]!r}"
