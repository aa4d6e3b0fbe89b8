"""``flowlens compare``: a successful and a failed episode of one task, side by side at the same frame.

    flowlens compare --success rollout_pick_up_the_bowl_success.mp4 \\
        --failure rollout_pick_up_the_bowl_failure.mp4 --frame-idx 10 --checkpoint synthetic \\
        --output compare.png

Both episodes must have the same prompt (from their file names, task lists, or --prompt).
"""

from __future__ import annotations

import argparse

from flowlens.cli.options import (
    INTERPOLATIONS,
    add_analysis_args,
    add_model_args,
    add_subcommand,
    backend_from,
    keep_open,
    prompt_flag,
    say,
    smooth_from,
    spec_from,
)

HELP = "success vs failure side by side (same prompt, same frame index)"


def add_parser(sub) -> argparse.ArgumentParser:
    p = add_subcommand(sub, "compare", HELP, __doc__)
    g = p.add_argument_group("episodes")
    g.add_argument("--success", required=True, help="the successful episode (.mp4, LeRobot root#i, episode folder)")
    g.add_argument("--failure", required=True, help="the failed episode of the same task")
    g.add_argument("--prompt", help="instruction for both (when their files carry none, or to override)")
    g.add_argument("--rotate180", action="store_true", help="frames are raw renders; the model saw them rotated")
    g.add_argument("--frame-idx", type=int, default=0, help="frame index in both episodes (default: 0)")
    g.add_argument("--frames", type=int, nargs="+", metavar="I", help="several frame indices (one figure each)")
    add_model_args(p)
    add_analysis_args(p)
    p.add_argument(
        "--output",
        default="compare.png",
        help="output PNG (several frames: <stem>_frameXXXX.png) (default: compare.png)",
    )
    p.add_argument("--dpi", type=int, default=110, help="PNG resolution (default: 110)")
    p.add_argument(
        "--interpolation",
        choices=INTERPOLATIONS,
        default="nearest",
        help="nearest = the patch grid (default, as in the HTML report); bilinear = smoothed",
    )
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from flowlens.pipeline.compare import compare_episodes, compare_paths
    from flowlens.pipeline.render import check_writable
    from flowlens.pipeline.sources import open_source

    spec = spec_from(args)
    frames = args.frames or [args.frame_idx]
    for folder in {p.parent for p in compare_paths(args.output, frames).values()}:  # before any work
        check_writable(folder, "--output")
    opts = {"prompt": prompt_flag(args.prompt), "rotate180": args.rotate180}
    success = keep_open(args, open_source(episode=args.success, success=True, **opts))
    failure = keep_open(args, open_source(episode=args.failure, success=False, **opts))
    backend = backend_from(args)
    say(
        f"flowlens compare · {success.name} (success) vs {failure.name} (failure) · frames {frames} · "
        f"model: {backend.name}"
    )
    options = {"seed": args.seed, "dpi": args.dpi, "smooth": smooth_from(args)}
    written = compare_episodes(success, failure, backend, spec, frames=frames, output=args.output, **options)
    for i, path in written.items():
        say(f"  wrote frame {i:<5} {path}")
    return 0
