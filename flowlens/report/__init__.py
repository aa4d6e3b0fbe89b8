"""The interactive, self-contained HTML report (sliders for frame / step / layer / head, method switch).

    from flowlens.report import report_frame, write_report
    frames = [report_frame(capture, {"base_0_rgb": rgb}, label=f"frame {t}") for t, (capture, rgb) in ...]
    write_report("episode.html", frames, title="pick up the black bowl · episode 3")

Modules: ``data`` (ReportFrame, the compact float16 encoding, sizes), ``capture`` (Capture →
ReportFrame: raw attention and rollout per step / layer / head), ``html`` (the page; its JS and
CSS live in ``assets/``).
"""

from flowlens.report.capture import raw_scores as raw_scores
from flowlens.report.capture import report_frame as report_frame
from flowlens.report.data import ReportFrame as ReportFrame
from flowlens.report.data import checksum as checksum
from flowlens.report.data import with_head_mean as with_head_mean
from flowlens.report.html import build_report as build_report
from flowlens.report.html import report_payload as report_payload
from flowlens.report.html import write_report as write_report

__all__ = [
    "ReportFrame",
    "build_report",
    "checksum",
    "raw_scores",
    "report_frame",
    "report_payload",
    "with_head_mean",
    "write_report",
]
