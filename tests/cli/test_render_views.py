"""What the --viz-type figures say about the run: steps, cameras, interpolation (issue 15)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from flowlens.io.sources import Frame  # noqa: E402
from flowlens.pipeline.backends import SyntheticBackend  # noqa: E402
from flowlens.pipeline.frames import compute_frame  # noqa: E402
from flowlens.pipeline.render import make_figure  # noqa: E402
from flowlens.pipeline.spec import AnalysisSpec  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def one_camera_frame() -> Frame:
    """A LIBERO MP4 frame: the base camera only (openpi saves no wrist view)."""
    from flowlens.core.frame import FrameTransform

    img = np.full((64, 64, 3), 120, np.uint8)
    img[40:56, 8:24] = (220, 30, 30)
    return Frame(
        index=10,
        images={"base_0_rgb": img},
        prompt="pick up the red block",
        state=None,
        actions=None,
        transforms={"base_0_rgb": FrameTransform((64, 64), (224, 224))},
        missing_cameras=("left_wrist_0_rgb", "right_wrist_0_rgb"),
    )


def result_for(kinds, **spec):
    return compute_frame(SyntheticBackend(), one_camera_frame(), AnalysisSpec.create(**spec), kinds=kinds)


def test_step_all_applies_to_the_heads_and_actions_figures():
    one = result_for(("heads", "actions"), method="raw", step="0")
    every = result_for(("heads", "actions"), method="raw", step="all")
    assert every.steps == tuple(range(10))
    # the per-head and action-to-action views average the steps asked for, as the other views do
    assert not np.allclose(np.nan_to_num(every.action_attention), np.nan_to_num(one.action_attention))
    heads = make_figure("heads", every)
    actions = make_figure("actions", every)
    assert "mean of 10 denoising steps" in heads.texts[0].get_text()
    assert "mean of 10 denoising steps" in actions.texts[0].get_text()
    assert "step 0 (t=1.00)" in make_figure("actions", one).texts[0].get_text()


def test_cli_heatmaps_default_to_the_patch_grid():
    from flowlens.cli.main import build_parser
    from flowlens.cli.options import figure_options_from
    from flowlens.pipeline.render import figure_config

    argv = ["single", "--video", "v.mp4", "--checkpoint", "synthetic"]
    args = build_parser().parse_args(argv)
    assert args.interpolation == "nearest" and figure_options_from(args)["smooth"] is False
    chosen = build_parser().parse_args([*argv, "--interpolation", "bilinear", "--camera-scale", "camera"])
    assert figure_options_from(chosen) == {"smooth": True, "camera_scale": "camera", "head_scale": "head"}
    assert figure_options_from(build_parser().parse_args([*argv, "--head-scale", "shared"]))["head_scale"] == "shared"
    for sub in (["compare", "--success", "a.mp4", "--failure", "b.mp4", "--checkpoint", "synthetic"],):
        assert build_parser().parse_args(sub).interpolation == "nearest"
    result = result_for(("image", "steps", "heads"), method="raw", step="all")
    for smooth, expected in ((False, "nearest"), (True, "bilinear")):
        config = figure_config(result, smooth=smooth)
        for kind in ("image", "steps", "heads"):
            fig = make_figure(kind, result, config)
            heat = [ax.images[-1] for ax in fig.axes if len(ax.images) == 2]  # frame, then heatmap
            assert heat, kind
            assert {im.get_interpolation() for im in heat} == {expected}, kind
            plt.close(fig)


def test_one_camera_video_says_which_cameras_were_absent():
    result = result_for(("image", "combined"), method="raw")
    for kind in ("image", "combined"):
        title = make_figure(kind, result)._suptitle.get_text()
        assert "cameras: base · absent: left wrist, right wrist" in title, kind
    table = [ax.tables[0] for ax in make_figure("combined", result).axes if ax.tables][0]
    cells = {(r, c): cell.get_text().get_text() for (r, c), cell in table.get_celld().items()}
    row = [r for (r, c), text in cells.items() if c == 0 and text == "absent cameras"]
    assert row and cells[(row[0], 1)] == "left wrist, right wrist (no share)"


def test_a_truncated_prompt_is_said_on_the_figures_and_echoed_once_shortly(bare_video, cli, tmp_path):
    from dataclasses import replace

    frame = replace(one_camera_frame(), prompt="pick up the red block " * 250)  # 5,500 characters
    result = compute_frame(SyntheticBackend(), frame, AnalysisSpec.create(method="raw"), kinds=("text",))
    n = result.layout.text.size
    for kind in ("image", "text", "combined"):
        title = make_figure(kind, result).get_suptitle()
        assert f"prompt truncated to {n} tokens: the model saw only" in title, kind
    assert "truncated" not in make_figure("text", result_for(("text",), method="raw")).get_suptitle()
    code, out, err = cli(
        "single", "--video", bare_video, "--checkpoint", "synthetic", "--prompt", frame.prompt,
        "--viz-type", "text", "--output", tmp_path / "t.png",
    )
    assert code == 0, err
    assert out.count("pick up the red block") <= 6 and "(5500 characters)" in out
    assert len(err) < 1000


def test_each_figure_names_its_episode_frame_and_prompt():
    from dataclasses import replace

    result = result_for(("image", "text", "combined", "evolution", "steps", "heads", "actions"), method="raw",
                        step="all")
    for kind in ("image", "text", "combined", "evolution", "steps", "heads", "actions"):
        title = make_figure(kind, replace(result, episode="libero_rollout_x")).get_suptitle()
        assert "episode libero_rollout_x · frame 10 · prompt 'pick up the red block'" in title, kind
