"""Flag parsing and output naming: query / step / --mode spellings, viz types, safe derived paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowlens.cli.main import rewrite_mode
from flowlens.core.openpi_layout import pi05_layout, pi0_layout
from flowlens.errors import FlowlensError
from flowlens.pipeline.compare import compare_paths
from flowlens.pipeline.episode import episode_folder
from flowlens.pipeline.render import expand_viz, output_paths
from flowlens.pipeline.spec import AnalysisSpec, parse_query, parse_step


@pytest.mark.parametrize(
    "text,expected",
    [
        ("action:0", "action:0"),
        ("a3", "action:3"),
        ("Action:12", "action:12"),
        ("actions", "actions"),
        ("last", "last"),
        ("state", "state"),
    ],
    ids=["action0", "a3", "case", "actions", "last", "state"],
)
def test_query_spellings(text, expected):
    assert parse_query(text) == expected


def test_query_tokens_on_the_pi0_and_pi05_layouts():
    pi0, pi05 = pi0_layout(), pi05_layout()
    act = pi0.actions
    assert AnalysisSpec(query="action:0").query_tokens(pi0).tolist() == [act.start]
    assert AnalysisSpec(query="last").query_tokens(pi0).tolist() == [act.stop - 1]
    assert AnalysisSpec(query="action:-1").query_tokens(pi0).tolist() == [act.stop - 1]
    assert AnalysisSpec(query="actions").query_tokens(pi0).size == 50
    assert AnalysisSpec(query="state").query_tokens(pi0).tolist() == [pi0.state.start]
    with pytest.raises(FlowlensError, match="Pi0.5 puts the state into the prompt"):
        AnalysisSpec(query="state").query_tokens(pi05)
    with pytest.raises(FlowlensError, match=r"action:0 … action:9"):
        AnalysisSpec(query="action:10").query_tokens(pi05)
    with pytest.raises(FlowlensError, match="Did you mean"):
        parse_query("actons")


def test_steps_heads_layers():
    assert parse_step("all") == "all" and parse_step("3") == 3 and parse_step(None) == 0
    with pytest.raises(FlowlensError, match="'all'"):
        parse_step("last-ish")
    spec = AnalysisSpec.create(method="raw", heads=[2, 5], step="all", layers=[0, 17])
    assert spec.heads_argument == [2, 5] and spec.step_indices(10) == tuple(range(10))
    assert AnalysisSpec.create(heads=[3]).heads_argument == 3 and AnalysisSpec.create().heads_argument == "mean"
    with pytest.raises(FlowlensError, match=r"layer 18 out of range: the model has 18 layers \(valid: 0–17\)"):
        spec.check_model(num_layers=18, num_heads=8, num_steps=10)  # layers ok; check a bad one:
        AnalysisSpec(layers=(18,)).check_model(num_layers=18, num_heads=8)
    AnalysisSpec(layers=(18,)).check_model(num_layers=19, num_heads=8)
    with pytest.raises(FlowlensError, match="method"):
        AnalysisSpec(method="saliency")


def test_step_indices_checks_the_step_alone():
    """step_indices checks the step against the steps sampled, with no placeholder model size; layers
    and heads wait for check_model, once per run."""
    assert AnalysisSpec(step=-1, layers=(99,), heads=(42,)).step_indices(10) == (9,)
    with pytest.raises(FlowlensError, match=r"^step 10 out of range: the model samples with 10 denoising steps"):
        AnalysisSpec(step=10).step_indices(10)


def test_rewrite_mode():
    assert rewrite_mode(["--mode", "single", "--video", "v.mp4"]) == ["single", "--video", "v.mp4"]
    assert rewrite_mode(["--video", "v.mp4", "--mode=episode"]) == ["episode", "--video", "v.mp4"]
    assert rewrite_mode(["single", "--mode", "single"]) == ["single"]
    assert rewrite_mode(["single", "--x"]) == ["single", "--x"]
    with pytest.raises(FlowlensError, match="conflicts"):
        rewrite_mode(["episode", "--mode", "single"])
    with pytest.raises(FlowlensError, match="needs a value"):
        rewrite_mode(["--mode"])


def test_viz_types_and_output_names(tmp_path):
    assert expand_viz(["all"]) == ("image", "text", "combined", "evolution")
    assert expand_viz(["image", "all", "heads"]) == ("image", "text", "combined", "evolution", "heads")
    assert len(expand_viz("full")) == 7
    with pytest.raises(FlowlensError, match="Did you mean 'image'"):
        expand_viz(["imag"])
    four = output_paths("out/attention.png", expand_viz("all"))
    assert [p.name for p in four.values()] == [
        "attention_image.png",
        "attention_text.png",
        "attention_combined.png",
        "attention_evolution.png",
    ]
    assert output_paths("x/a.png", ["text"]) == {"text": Path("x/a.png")}
    assert output_paths(str(tmp_path), ["image"])["image"] == tmp_path / "attention_image.png"
    assert output_paths("results/", ["image"])["image"] == Path("results/attention_image.png")


def test_derived_names_stay_inside_the_output_folder(tmp_path):
    folder = episode_folder(tmp_path, "../../etc/passwd")
    assert folder.parent == tmp_path and folder.name not in (".", "..") and "/" not in folder.name
    assert episode_folder(tmp_path, "..") == tmp_path / "episode"
    paths = compare_paths(tmp_path, [3], prompt="../../put it/there; rm -rf *")
    (p,) = paths.values()
    assert p.parent == tmp_path and "/" not in p.name and not p.name.startswith(".")
    assert p.name.startswith("compare_") and p.name.endswith("_frame0003.png")


def test_prompt_with_path_characters_is_safe_end_to_end(outcome_pair, tmp_path, cli):
    s, f = outcome_pair
    out = tmp_path / "cmp"
    out.mkdir()
    code, _, err = cli(
        "compare",
        "--success",
        s,
        "--failure",
        f,
        "--frame-idx",
        "2",
        "--checkpoint",
        "synthetic",
        "--method",
        "raw",
        "--layers",
        "17",
        "--prompt",
        "../../escape/this <b>now</b>",
        "--output",
        f"{out}/",
    )
    assert code == 0, err
    written = [p for p in tmp_path.rglob("*.png")]
    assert len(written) == 1 and written[0].parent == out and not written[0].name.startswith(".")
