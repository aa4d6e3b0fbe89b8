"""Every figure family renders on the Pi0.5 layout too (200 text tokens mostly padding, no state)."""

import numpy as np
import pytest

import flowlens.figures as ff
from flowlens.report import report_frame, report_payload
from flowlens.testing import synthetic_capture


@pytest.fixture(scope="module")
def pi05():
    cap = synthetic_capture("pi05", num_layers=3, num_heads=2, num_steps=2)
    p, act = cap.layout.prefix_len, cap.layout.actions
    raw = np.stack(
        [s.probs[:, :, act.start - p :].mean(axis=2) for s in cap.steps]
    )  # [step, layer, head, token]
    return cap, raw


def test_pi05_figures(pi05):
    cap, raw = pi05
    layout = cap.layout
    cfg = ff.FigureConfig(method="raw attention")
    for make in (ff.attention_image_figure, ff.attention_combined_figure):
        make(raw[0], layout, {"base_0_rgb": np.zeros((224, 224, 3), np.uint8)}, config=cfg)
    ff.attention_text_figure(raw[0], layout, config=cfg)
    fig = ff.attention_evolution_figure(raw[0], layout, config=cfg)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "state" not in legend and "actions" in legend
    ax = ff.word_bars(raw[0, -1].mean(axis=0), layout)
    assert len(ax.get_xticklabels()) == len(layout.text.words) + 2  # padding is not a word or a sink
    ff.head_grid(raw[0], layout)
    ff.head_word_grid(raw[0], layout)
    ff.step_strip(raw[:, -1].mean(axis=1), layout, times=cap.times)
    h = layout.actions.size
    ff.action_matrix_grid(np.ones((2, h, h)) / h)
    payload, _ = report_payload([report_frame(cap)])
    frame = payload["frames"][0]
    assert frame["words"] == list(layout.text.words) and frame["sinks"] == ["<bos>", "\\n"]  # no padding
    assert frame["K"] == 512 + len(layout.text.words) + 2
