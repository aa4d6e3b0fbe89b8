import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from report_helpers import make_frames

import flowlens.report
from flowlens.errors import FlowlensError
from flowlens.report import ReportFrame, build_report, checksum, report_payload, with_head_mean, write_report
from flowlens.report.data import compact, display_tokens


def embedded(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="flowlens-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def test_report_is_self_contained(frames):
    html = build_report(frames, title="episode 3", query="action tokens")
    assert "http://" not in html and "https://" not in html  # no CDN, no network
    assert "<script src" not in html and "<link" not in html
    data = embedded(html)
    assert data["layers"] == ["0", "1", "2", "3"]
    assert data["heads"] == ["mean", "head 0", "head 1"]
    assert [m["key"] for m in data["methods"]] == ["raw", "rollout", "flow"]
    assert [m["label"] for m in data["methods"]] == ["raw attention", "rollout", "attention flow"]
    f0 = data["frames"][0]
    assert [c["name"] for c in f0["cameras"]] == ["base_0_rgb", "left_wrist_0_rgb"]  # masked camera left out
    assert f0["cameras"][0]["image"].startswith("data:image/png;base64,")
    assert f0["cameras"][0]["rotate180"] is True and f0["cameras"][0]["frame"] == [96, 120]
    assert f0["words"][:3] == ["pick", "up", "the"] and f0["sinks"] == ["<bos>", "\\n"]
    assert f0["K"] == 512 + 11 + 2
    assert f0["data"]["raw"]["shape"] == [2, 4, 3, 525]
    assert f0["data"]["flow"]["shape"] == [2, 1, 1, 525]


def test_compact_vector_is_patches_words_sinks(frames):
    layout = frames[0].layout
    scores = np.arange(layout.n, dtype=float)
    shown = display_tokens(layout)
    vec = compact(scores, layout, shown)
    np.testing.assert_array_equal(vec[:512], np.arange(512))
    text = layout.text
    assert vec[shown["sink_offset"]] == text.start  # <bos> is the first text token
    word0 = [i for i, w in enumerate(text.word_of_token) if w == 0]
    assert vec[shown["word_offset"]] == sum(text.start + i for i in word0)


def test_prompt_with_script_tag_is_escaped():
    prompt = "pick <script>alert(1)</script> & <img src=x onerror=alert(2)>"
    frames = make_frames(prompt=prompt, count=1)
    html = build_report(frames, title="<b>bold</b> title", source="ep</script><script>alert(3)</script>.npz")
    lower = html.lower()
    assert "<script>alert" not in lower
    assert "<img src=x" not in lower
    assert "<b>bold" not in lower
    assert "&lt;b&gt;bold&lt;/b&gt; title" in html  # <title> is HTML-escaped
    data = embedded(html)  # and the JSON still decodes to the original text
    assert "<script>alert(1)</script>" in "".join(data["frames"][0]["words"])
    assert data["source"] == "ep</script><script>alert(3)</script>.npz"
    # exactly the two script elements of the page (data + code) open and close
    assert lower.count("<script") == 2 and lower.count("</script>") == 2


def test_checksums_match_float16_values(frames):
    payload, sums = report_payload(frames)
    assert len(sums) == 2 * (2 * 4 * 3 + 2 * 4 * 1 + 2 * 1 * 1)
    half = compact(frames[0].scores["raw"][1, 2, 0], frames[0].layout, display_tokens(frames[0].layout))
    assert sums[(0, "raw", 1, 2, 0)] == checksum(half.astype("<f2"))
    assert sums[(0, "raw", 1, 2, 0)] != sums[(0, "raw", 1, 3, 0)]


def test_size_is_bounded(frames):
    html = build_report(frames)
    size = len(html.encode())
    with pytest.raises(FlowlensError, match="keep_heads=False"):
        build_report(frames, max_bytes=size // 2)
    small = build_report(frames, keep_heads=False)
    assert len(small.encode()) < size
    assert embedded(small)["heads"] == ["mean"]


def test_pi0_size_per_frame_is_documented():
    """Pi0 LIBERO, 10 steps × 18 layers × (8 heads + mean) raw + rollout: ≈ 2.5 MB per frame."""
    frames = make_frames(count=1, steps=10, layers=18, heads=8)
    roll = frames[0].scores["rollout"]
    big = ReportFrame(
        frames[0].layout,
        {"raw": frames[0].scores["raw"], "rollout": roll},
        {"base_0_rgb": np.zeros((256, 256, 3), np.uint8)},
    )
    size = len(build_report([big]).encode())
    assert 2.3e6 < size < 2.8e6
    assert len(build_report([big], keep_heads=False).encode()) < 0.6e6


def test_bad_inputs_name_the_fix(frames):
    layout = frames[0].layout
    with pytest.raises(FlowlensError, match=r"\[step, layer, head, token\]"):
        ReportFrame(layout, {"raw": np.zeros((4, layout.n))})
    with pytest.raises(FlowlensError, match="Did you mean 'base_0_rgb'"):
        ReportFrame(
            layout, {"raw": np.zeros((1, 1, 1, layout.n))}, {"base_rgb": np.zeros((4, 4, 3), np.uint8)}
        )
    odd = ReportFrame(layout, {"raw": np.zeros((3, 4, 1, layout.n))})
    with pytest.raises(FlowlensError, match="step axis"):
        build_report([frames[0], odd])
    with pytest.raises(FlowlensError, match="layer_ids"):
        build_report(frames, layer_ids=[0, 1])
    with pytest.raises(FlowlensError, match=r"\.html"):
        write_report("report.txt", frames)
    with pytest.raises(FlowlensError, match="per_head"):
        with_head_mean(np.zeros((2, 2)))


def test_write_report_is_atomic(tmp_path, frames, monkeypatch):
    path = write_report(tmp_path / "r.html", frames)
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    import pathlib

    def half_then_fail(self, data):
        with open(self, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(pathlib.Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_report(tmp_path / "new.html", frames)
    assert sorted(os.listdir(tmp_path)) == ["r.html"]


def test_placeholders_in_title_or_prompt_are_not_substituted():
    # {{DATA}} / {{CSS}} / {{JS}} in user text stay literal text: the template is filled in one pass.
    prompt = "pick {{DATA}} up {{JS}}"
    frames = make_frames(prompt=prompt, count=1)
    title = "{{DATA}} {{CSS}} {{JS}} {{TITLE}}"
    html = build_report(frames, title=title)
    assert f"<title>{title}</title>" in html
    plain = build_report(frames, title="t")
    assert len(html) - len(plain) == 2 * (len(title) - 1)  # the title appears in <title> and the JSON
    data = embedded(html)
    assert data["title"] == title


def test_frame_view_interpolation_is_carried_into_the_report(frames):
    payload, _ = report_payload(frames)
    assert payload["interpolation"] == "nearest"  # the patch grid, as in the model view and the CLI figures
    assert report_payload(frames, interpolation="bilinear")[0]["interpolation"] == "bilinear"
    with pytest.raises(FlowlensError, match="interpolation"):
        report_payload(frames, interpolation="smooth")
    js = (Path(flowlens.report.__file__).parent / "assets" / "report.js").read_text()
    assert 'ctx.imageSmoothingEnabled = D.interpolation === "bilinear"' in js
    assert js.count("imageSmoothingEnabled = true") == 0  # the frame view is no longer always smoothed
