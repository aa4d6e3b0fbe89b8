"""The public surface: the exact top-level names, every subpackage's __all__ resolves, the core import
stays light."""

import importlib
import subprocess
import sys

import pytest

import flowlens

TOP_LEVEL = {
    "Capture", "TokenLayout", "TokenGraph", "FrameTransform", "FlowlensError",
    "rollout", "flow", "attention_rollout", "attention_flow",
    "patch_grid", "frame_heatmap", "word_scores", "load_capture", "save_capture",
}

SUBPACKAGES = ["flowlens.analysis", "flowlens.analysis.flow", "flowlens.core", "flowlens.io",
               "flowlens.projection", "flowlens.figures", "flowlens.pipeline", "flowlens.report",
               "flowlens.testing", "flowlens.hypotheses", "flowlens.attribution", "flowlens.causal"]


def test_top_level_is_exactly_the_everyday_surface():
    assert set(flowlens.__all__) == TOP_LEVEL
    assert len(flowlens.__all__) == len(TOP_LEVEL)
    assert isinstance(flowlens.__version__, str) and flowlens.__version__


def test_every_exported_name_resolves():
    for name in flowlens.__all__:
        assert getattr(flowlens, name) is not None, name


def test_removed_names_are_gone():
    for name in ("attention_flow_fused", "attention_flow_graph", "AttentionPass", "make_capture", "head_stats"):
        assert not hasattr(flowlens, name), name
    with pytest.raises(AttributeError, match="has no attribute 'attention_flow_graph'"):
        flowlens.attention_flow_graph  # noqa: B018


@pytest.mark.parametrize("module", SUBPACKAGES)
def test_subpackage_all_resolves(module):
    mod = importlib.import_module(module)
    assert mod.__all__, module
    for name in mod.__all__:
        assert getattr(mod, name) is not None, f"{module}.{name}"


def test_the_rest_lives_in_its_subpackage():
    import flowlens.analysis as analysis
    import flowlens.core as core

    for name in ("head_stats", "rank_heads", "head_similarity", "head_roles", "head_grids", "action_attention",
                 "action_rollout", "summarize_actions", "rollout_all_steps", "step_report", "step_evolution",
                 "by_step", "Rollout", "FlowResult", "attention_rollout", "attention_flow"):
        assert name in analysis.__all__, name
    for name in ("AttentionPass", "PassKind", "make_capture", "TokenKind", "pi0_layout", "pi05_layout",
                 "select_query", "parse_query"):
        assert name in core.__all__, name
    assert analysis.flow.flow is flowlens.flow and analysis.rollout.rollout is flowlens.rollout


def test_import_flowlens_loads_no_jax_numba_or_matplotlib():
    code = ("import sys, flowlens, flowlens.analysis, flowlens.core; "
            "print(sorted(m for m in ('jax', 'numba', 'matplotlib', 'flax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
