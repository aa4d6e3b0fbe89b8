"""``flowlens compare`` and ``flowlens report`` end to end."""

from __future__ import annotations

import pytest


def test_compare_success_failure(outcome_pair, tmp_path, cli, png_ok):
    s, f = outcome_pair
    out = tmp_path / "cmp" / "compare.png"
    code, stdout, err = cli(
        "compare",
        "--success",
        s,
        "--failure",
        f,
        "--frame-idx",
        "5",
        "--checkpoint",
        "synthetic",
        "--layers",
        "17",
        "--output",
        out,
    )
    assert code == 0, err
    png_ok(out)
    assert "frame 5" in stdout
    code, _, err = cli(
        "compare",
        "--success",
        s,
        "--failure",
        f,
        "--frames",
        "1",
        "11",
        "--checkpoint",
        "synthetic",
        "--method",
        "raw",
        "--output",
        tmp_path / "cmp" / "c.png",
    )
    assert code == 0, err
    png_ok(tmp_path / "cmp" / "c_frame0001.png")
    png_ok(tmp_path / "cmp" / "c_frame0011.png")


def test_compare_errors(outcome_pair, tmp_path, cli):
    s, f = outcome_pair
    other = s.with_name("rollout_open_the_drawer_failure.mp4")
    other.write_bytes(f.read_bytes())
    code, _, err = cli(
        "compare",
        "--success",
        s,
        "--failure",
        other,
        "--checkpoint",
        "synthetic",
        "--output",
        tmp_path / "x.png",
    )
    assert code == 2 and "different prompts" in err and "open the drawer" in err
    code, _, err = cli(
        "compare",
        "--success",
        s,
        "--failure",
        f,
        "--frame-idx",
        "12",
        "--checkpoint",
        "synthetic",
        "--output",
        tmp_path / "x.png",
    )
    assert code == 2 and "frame 12 out of range" in err and "0–11" in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_report_html(libero_tree, cli):
    code, out, err = cli(
        "report",
        "--video",
        "data/libero/90/videos/rollout_task0_ep0.mp4",
        "--frames",
        "0",
        "20",
        "--checkpoint",
        "synthetic",
        "--output",
        "rep/report.html",
        "--no-progress",
        "--methods",
        "raw",
        "rollout",
    )
    assert code == 0, err
    html = (libero_tree / "rep" / "report.html").read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html") and "rollout" in html and "frame 20" in html
    assert "pick up the black bowl" in html
    assert '"interpolation": "nearest"' in html or '"interpolation":"nearest"' in html  # the default
    video = "data/libero/90/videos/rollout_task0_ep0.mp4"
    smooth_args = "--frames 0 --checkpoint synthetic --output rep/smooth.html --no-progress --methods raw"
    code, _, err = cli("report", "--video", video, *smooth_args.split(), "--interpolation", "bilinear")
    assert code == 0, err
    smooth = (libero_tree / "rep" / "smooth.html").read_text(encoding="utf-8")
    assert '"interpolation": "bilinear"' in smooth or '"interpolation":"bilinear"' in smooth
    code, _, err = cli(
        "report",
        "--video",
        "data/libero/90/videos/rollout_task0_ep0.mp4",
        "--checkpoint",
        "synthetic",
        "--output",
        "rep/report.png",
    )
    assert code == 2 and ".html" in err
