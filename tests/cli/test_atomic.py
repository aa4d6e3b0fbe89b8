"""A failure half-way leaves complete files or none: never a partial PNG, never a temp file."""

from __future__ import annotations

import shlex

import matplotlib.figure

from flowlens.errors import FlowlensError

ARGV = shlex.split(
    "single --video data/libero/90/videos/rollout_task0_ep0.mp4 --checkpoint synthetic "
    "--layers 17 --output out/attention.png --viz-type image text evolution"
)


def test_failing_figure_leaves_no_partial_file(libero_tree, cli, png_ok, leftovers, monkeypatch):
    import flowlens.pipeline.render as render

    real = render.make_figure

    def flaky(kind, result, config=None):
        if kind == "text":
            raise FlowlensError("text figure failed on purpose")
        return real(kind, result, config)

    monkeypatch.setattr(render, "make_figure", flaky)
    code, _, err = cli(*ARGV)
    assert code == 2 and "failed on purpose" in err
    png_ok(libero_tree / "out" / "attention_image.png")  # finished before the failure: complete
    assert not (libero_tree / "out" / "attention_text.png").exists()
    assert not (libero_tree / "out" / "attention_evolution.png").exists()
    assert not leftovers(libero_tree)


def test_write_interrupted_mid_file(libero_tree, cli, leftovers, monkeypatch):
    real = matplotlib.figure.Figure.savefig

    def half_write(self, fname, *args, **kwargs):
        with open(fname, "wb") as fh:
            fh.write(b"\x89PNG\r\n\x1a\n half")  # a truncated PNG, then the disk "fills up"
        raise OSError(28, "No space left on device", str(fname))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half_write)
    code, _, err = cli(*ARGV)
    assert code == 2
    assert "No space left on device" in err and "Traceback" not in err
    assert not (libero_tree / "out").exists() or not any((libero_tree / "out").iterdir())
    assert not leftovers(libero_tree)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", real)
