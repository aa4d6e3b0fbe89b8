import numpy as np
import pytest

from flowlens.errors import FlowlensError
from flowlens.figures import group_shares, share_evolution, step_share_evolution, step_strip


def test_group_shares_sum_to_one_and_keep_sinks(data):
    names, shares = group_shares(data.rollout, data.layout)
    assert names == ["base_0_rgb", "left_wrist_0_rgb", "bos", "words", "newline", "state", "actions"]
    assert shares.shape == (18, 7)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    assert (shares[:, names.index("bos")] > 0).all()


def test_share_evolution_stacked_area(data):
    ax = share_evolution(data.rollout, data.layout, x_values=range(18), title="rollout")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [
        "image: base",
        "image: left wrist",
        "<bos> (sink)",
        "prompt words",
        "\\n (sink)",
        "state",
        "actions",
    ]
    assert len(ax.collections) == 7
    assert ax.get_ylim() == (0.0, 1.0)
    assert ax.get_xlabel() == "layer"


def test_share_evolution_bar_and_errors(data):
    ax = share_evolution(data.raw.mean(axis=1), data.layout, kind="bar")
    assert len(ax.patches) == 18 * 7
    with pytest.raises(FlowlensError, match="Did you mean 'area'"):
        share_evolution(data.rollout, data.layout, kind="areas")
    with pytest.raises(FlowlensError, match="x_values"):
        share_evolution(data.rollout, data.layout, x_values=[1, 2])


def test_step_shares_label_steps_with_time(data):
    scores = data.raw_steps[:, -1].mean(axis=1)  # [step, token]
    ax = step_share_evolution(scores, data.layout, times=data.capture.times)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0\nt=1.0", "1\nt=0.7", "2\nt=0.3"]
    assert ax.get_xlabel() == "denoising step"


def test_step_strip_one_panel_per_step_shared_scale(data):
    scores = data.raw_steps[:, -1].mean(axis=1)
    fig = step_strip(
        scores, data.layout, image=data.images["base_0_rgb"], times=data.capture.times, title="steps"
    )
    maps = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in maps] == ["step 0 (t=1.00)", "step 1 (t=0.67)", "step 2 (t=0.33)"]
    assert len({ax.images[-1].get_clim() for ax in maps}) == 1
    assert fig._suptitle.get_text() == "steps"
