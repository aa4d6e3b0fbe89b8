"""The report in a real headless browser (Debian ``chromium``): load it, move sliders, read the DOM.

The page writes ``data-checksum`` (FNV-1a of the float16 values it displays) on <body> after every
render; the test compares it with the checksum Python computes for the same slider position, so a
pass means the browser decoded and showed exactly the right map — not just "something changed".
CI must install chromium (``apt-get install -y chromium``); without a chromium binary the test is
skipped with that reason.
"""

import html
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from report_helpers import make_frames

from flowlens.report import report_payload, write_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--virtual-time-budget=5000",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    path = os.environ.get("FLOWLENS_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if path is None:
        reason = (
            "no chromium binary found (looked for $FLOWLENS_CHROMIUM and "
            + ", ".join(BROWSERS)
            + "); install it with `apt-get install -y chromium` to run the browser test"
        )
        print(reason)
        pytest.skip(reason)
    return path


def run_browser(browser, tmp_path, url, *extra):
    profile = tmp_path / "profile"
    cmd = [browser, *FLAGS, f"--user-data-dir={profile}", *extra, url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def body_attrs(dom: str) -> dict:
    tag = re.search(r"<body([^>]*)>", dom).group(1)
    return {k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', tag)}


def test_sliders_change_the_displayed_map(browser, tmp_path):
    frames = make_frames()
    path = write_report(tmp_path / "report.html", frames, title="browser test")
    _, sums = report_payload(frames)
    url = path.resolve().as_uri()

    dom = run_browser(
        browser, tmp_path, url + "#method=raw&step=0&layer=1&head=mean&drive=layer:3", "--dump-dom"
    )
    attrs = body_attrs(dom)
    assert attrs["data-rendered"] == "1" and attrs["data-driven"] == "1"
    assert int(attrs["data-checksum-initial"]) == sums[(0, "raw", 0, 1, 0)]
    assert int(attrs["data-checksum"]) == sums[(0, "raw", 0, 3, 0)]
    assert attrs["data-checksum"] != attrs["data-checksum-initial"]
    assert '"layer":"3"' in attrs["data-state"]

    # head slider ("head 1" is index 2 of mean, head 0, head 1), step slider, another frame, rollout
    dom = run_browser(browser, tmp_path, url + "#frame=1&method=rollout&layer=2&drive=step:1", "--dump-dom")
    attrs = body_attrs(dom)
    assert int(attrs["data-checksum-initial"]) == sums[(1, "rollout", 0, 2, 0)]
    assert int(attrs["data-checksum"]) == sums[(1, "rollout", 1, 2, 0)]
    dom = run_browser(browser, tmp_path, url + "#method=raw&layer=0&drive=head:head%201", "--dump-dom")
    assert int(body_attrs(dom)["data-checksum"]) == sums[(0, "raw", 0, 0, 2)]

    # flow has one layer: the layer slider is marked constant and does not change the map
    dom = run_browser(browser, tmp_path, url + "#method=flow&layer=0&drive=layer:3", "--dump-dom")
    attrs = body_attrs(dom)
    assert attrs["data-checksum"] == attrs["data-checksum-initial"] == str(sums[(0, "flow", 0, 0, 0)])
    assert "constant for this method" in dom

    # the words and sinks are in the DOM as text, and there is one canvas per valid camera
    assert dom.count('class="word"') == 11 and dom.count('class="sink"') == 2
    assert len(re.findall(r"<canvas[^>]*data-camera=", dom)) == 2


def test_hover_reads_patch_and_word_values(browser, tmp_path):
    frames = make_frames()
    path = write_report(tmp_path / "report.html", frames)
    payload, _ = report_payload(frames)
    from flowlens.report.data import compact, display_tokens

    layout = frames[0].layout
    vals = compact(frames[0].scores["raw"][0, 2, 1], layout, display_tokens(layout)).astype("<f2")
    url = path.resolve().as_uri() + "#method=raw&layer=2&head=head%200&view=model&drive=hover:base_0_rgb:3:4"
    info = re.search(r'<div id="info">(.*?)</div>', run_browser(browser, tmp_path, url, "--dump-dom")).group(
        1
    )
    assert info.startswith("base_0_rgb patch (row 3, col 4): ")
    assert float(info.rsplit(" ", 1)[1]) == pytest.approx(float(vals[3 * 16 + 4]), rel=5e-3)
    url = path.resolve().as_uri() + "#method=raw&layer=2&head=head%200&drive=hoverword:4"
    info = re.search(r'<div id="info">(.*?)</div>', run_browser(browser, tmp_path, url, "--dump-dom")).group(
        1
    )
    word = display_tokens(layout)["word_offset"] + 4
    assert info.startswith("word \u201cbowl\u201d: ")
    assert float(info.rsplit(" ", 1)[1]) == pytest.approx(float(vals[word]), rel=5e-3)


def test_hostile_prompt_is_shown_as_text(browser, tmp_path):
    prompt = "pick <img src=x onerror=document.body.setAttribute('data-pwned','1')> <script>alert(1)</script>"
    frames = make_frames(prompt=prompt, count=1)
    path = write_report(tmp_path / "hostile.html", frames, title="<script>alert(2)</script>")
    dom = run_browser(browser, tmp_path, path.resolve().as_uri(), "--dump-dom")
    attrs = body_attrs(dom)
    assert attrs["data-rendered"] == "1"
    assert "data-pwned" not in attrs
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "<script>alert" not in dom


def test_screenshot_shows_the_report(browser, tmp_path):
    from PIL import Image

    frames = make_frames()
    path = write_report(tmp_path / "report.html", frames, title="screenshot")
    shot = tmp_path / "shot.png"
    run_browser(
        browser,
        tmp_path,
        path.resolve().as_uri() + "#method=raw&layer=3&view=model",
        f"--screenshot={shot}",
        "--window-size=1280,1000",
    )
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (1000, 1280)
    assert img.std() > 10  # not a blank page
    keep = os.environ.get("FLOWLENS_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_hover_value_follows_a_method_switch_and_a_slider(browser, tmp_path):
    frames = make_frames()
    path = write_report(tmp_path / "report.html", frames)
    from flowlens.report.data import compact, display_tokens

    layout = frames[0].layout
    tokens = display_tokens(layout)

    def shown(scores):
        return compact(scores, layout, tokens).astype("<f2")

    raw = shown(frames[0].scores["raw"][0, 2, 0])
    roll = shown(frames[0].scores["rollout"][0, 2, 0])
    assert not np.isclose(float(raw[3 * 16 + 4]), float(roll[3 * 16 + 4]), rtol=1e-2)
    base = path.resolve().as_uri() + "#method=rollout&layer=2&view=model"
    dom = run_browser(browser, tmp_path, base + "&drive=hover:base_0_rgb:3:4,method:raw", "--dump-dom")
    info = re.search(r'<div id="info">(.*?)</div>', dom).group(1)
    assert '"method":"raw"' in body_attrs(dom)["data-state"]
    assert info.startswith("base_0_rgb patch (row 3, col 4): ")
    assert float(info.rsplit(" ", 1)[1]) == pytest.approx(float(raw[3 * 16 + 4]), rel=5e-3)
    # a word hovered, then the layer slider moved: the word's value at the new layer
    dom = run_browser(browser, tmp_path, base + "&drive=hoverword:4,method:raw,layer:3", "--dump-dom")
    info = re.search(r'<div id="info">(.*?)</div>', dom).group(1)
    word = tokens["word_offset"] + 4
    assert info.startswith("word \u201cbowl\u201d: ")
    expected = shown(frames[0].scores["raw"][0, 3, 0])[word]
    assert float(info.rsplit(" ", 1)[1]) == pytest.approx(float(expected), rel=5e-3)


def test_absent_cameras_and_the_word_scale_are_on_the_page(browser, tmp_path):
    from flowlens.report.data import compact, display_tokens

    frames = make_frames(count=1)
    layout = frames[0].layout
    absent = [c.name for c in layout.cameras if not c.valid]
    assert absent == ["right_wrist_0_rgb"]
    path = write_report(tmp_path / "report.html", frames)
    dom = run_browser(browser, tmp_path, path.resolve().as_uri() + "#method=raw&layer=2", "--dump-dom")
    note = re.search(r'<div class="absent">(.*?)</div>', dom).group(1)
    assert note.startswith("absent: right_wrist_0_rgb")
    tokens = display_tokens(layout)
    vals = compact(frames[0].scores["raw"][0, 2, 0], layout, tokens).astype("<f2").astype(float)
    words = vals[tokens["word_offset"] : tokens["sink_offset"]]
    shown = re.search(r'<span class="word-scale-max">(.*?)</span>', dom).group(1)
    assert float(shown) == pytest.approx(words.max(), rel=5e-3)


def test_a_flat_flow_map_says_why(browser, tmp_path):
    frames = make_frames(count=1)
    flow = frames[0].scores["flow"]
    flat = np.where(np.isnan(flow), np.nan, 0.01)
    flat[..., frames[0].layout.cameras[0].indices[0]] = 0.0105  # within 10 % of the largest
    frames[0].scores["flow"] = flat.astype(flow.dtype)
    path = write_report(tmp_path / "report.html", frames)
    dom = run_browser(browser, tmp_path, path.resolve().as_uri() + "#method=flow", "--dump-dom")
    note = re.search(r'<div id="flat"[^>]*>(.*?)</div>', dom).group(1)
    assert note.startswith("This map is nearly flat") and "bottleneck" in note
    dom = run_browser(browser, tmp_path, path.resolve().as_uri() + "#method=raw&layer=2", "--dump-dom")
    assert re.search(r'<div id="flat"[^>]*>(.*?)</div>', dom).group(1) == ""
