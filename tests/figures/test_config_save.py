import os
import struct

import matplotlib.pyplot as plt
import pytest

from flowlens.errors import FlowlensError
from flowlens.figures import FigureConfig, save_figure
from flowlens.figures.save import atomic_path, write_text


def test_config_title_names_method_query_layer_step_heads():
    cfg = FigureConfig(method="rollout", query="action a0", heads=(1, 3))
    assert (
        cfg.title(layer=17, step=2)
        == "rollout · query: action a0 · layer 17 · step 2 · heads: mean of [1, 3]"
    )
    assert FigureConfig(heads=4).title() == "attention · query: action tokens · head 4"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": 1.5}, "alpha must be in"),
        ({"cmap": "infernoo"}, "Did you mean 'inferno'"),
        ({"on": "frames"}, "Did you mean 'frame'"),
        ({"dpi": 0}, "dpi must be a positive"),
        ({"figsize": (3,)}, "figsize"),
        ({"heads": "mean"}, "heads must be None"),
    ],
    ids=["alpha", "cmap", "on", "dpi", "figsize", "heads"],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(FlowlensError, match=match):
        FigureConfig(**kwargs)


def test_config_is_frozen():
    cfg = FigureConfig(layers=[0, 17])
    assert cfg.layers == (0, 17)
    with pytest.raises(AttributeError):
        cfg.alpha = 0.2  # type: ignore[misc]


def test_save_figure_writes_png(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    out = save_figure(fig, tmp_path / "a.png", dpi=50)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["a.png"]
    assert out.stat().st_mode & 0o044  # readable by others like any saved file (mkstemp makes 0600)


def test_interrupted_save_leaves_no_file(tmp_path, monkeypatch):
    fig, ax = plt.subplots()
    ax.plot([0, 1])

    def half_then_fail(fname, **kwargs):
        with open(fname, "wb") as fh:
            fh.write(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13))  # a truncated PNG
        raise KeyboardInterrupt("interrupted mid-write")

    monkeypatch.setattr(fig, "savefig", half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        save_figure(fig, tmp_path / "a.png")
    assert os.listdir(tmp_path) == []


def test_existing_file_survives_a_failed_rewrite(tmp_path):
    target = write_text(tmp_path / "r.html", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("new but half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.html"]


def test_save_errors_name_the_fix(tmp_path):
    fig, _ = plt.subplots()
    with pytest.raises(FlowlensError, match="no suffix"):
        save_figure(fig, tmp_path / "figure")
    with pytest.raises(FlowlensError, match="does not exist"):
        save_figure(fig, tmp_path / "missing" / "a.png")
