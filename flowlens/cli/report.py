"""``flowlens report``: an interactive, self-contained HTML report of an episode's frames.

    flowlens report --video data/libero/90/videos/rollout_task0_ep0.mp4 --prompt "pick up the bowl" \\
        --frames 0 10 20 --checkpoint synthetic --output report.html

Sliders for frame, denoising step, layer and head; a switch between raw attention, rollout and
attention flow; works offline (everything is inlined).
"""

from __future__ import annotations

import argparse

from flowlens.cli.options import (
    INTERPOLATIONS,
    add_frame_args,
    add_model_args,
    add_source_args,
    add_subcommand,
    backend_from,
    say,
    source_from,
    spec_from,
)
from flowlens.pipeline.report import REPORT_METHODS

HELP = "interactive HTML report (frame / step / layer / head sliders, method switch)"


def add_parser(sub) -> argparse.ArgumentParser:
    p = add_subcommand(sub, "report", HELP, __doc__)
    add_source_args(p)
    add_frame_args(p)
    add_model_args(p)
    a = p.add_argument_group("analysis")
    a.add_argument(
        "--query",
        default="action:0",
        help="query tokens: action:0 (default), action:<i>, actions, last, state",
    )
    a.add_argument("--step", default="0", help="denoising step of attention flow (raw and rollout show every step)")
    a.add_argument(
        "--methods",
        nargs="+",
        default=["raw", "rollout", "flow"],
        choices=list(REPORT_METHODS),
        help="methods to embed (default: raw rollout flow; flow is the slow one; norm, alti, value_zeroing, "
        "alti_flow need a model checkpoint or builtin:tabletop)",
    )
    p.add_argument(
        "--interpolation",
        choices=INTERPOLATIONS,
        default="nearest",
        help="frame view: nearest = the patch grid (default, as in the model view); bilinear = smoothed",
    )
    p.add_argument("--output", default="report.html", help="output .html (default: report.html)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run, method="rollout", heads=None, layers=None)
    return p


def run(args) -> int:
    from pathlib import Path

    from flowlens.errors import FlowlensError
    from flowlens.pipeline.frames import frame_indices
    from flowlens.pipeline.render import check_writable
    from flowlens.pipeline.report import build_episode_report
    from flowlens.pipeline.sources import source_prompt

    if Path(args.output).suffix.lower() not in (".html", ".htm"):
        raise FlowlensError(f"--output {args.output!r} must end in .html (the report is one HTML file).")
    check_writable(Path(args.output).parent, "--output")  # before any work
    spec = spec_from(args)
    source = source_from(args)
    frames = frame_indices(len(source), args.frames, args.frame_step)
    source_prompt(source)
    backend = backend_from(args)
    say(f"flowlens report · {source.name} · frames {frames} · model: {backend.name}")
    path = build_episode_report(
        source,
        backend,
        spec,
        frames=frames,
        output=args.output,
        seed=args.seed,
        progress=not args.no_progress,
        methods=args.methods,
        interpolation=args.interpolation,
    )
    say(f"  wrote report    {path} ({path.stat().st_size / 1e6:.1f} MB; open it in a browser)")
    return 0
