"""``flowlens demo``: the whole tour — single frame, episode video, success vs failure, HTML report.

    flowlens demo --output-dir ./flowlens_demo

Runs on the embedded tabletop model (``builtin:tabletop``) with episodes it generates itself; if
the embedded model is not installed, on synthetic attention over synthetic frames (and says so).
"""

from __future__ import annotations

import argparse

from flowlens.cli.options import add_subcommand

HELP = "run every command on a generated success and failure episode; write every figure type"


def add_parser(sub) -> argparse.ArgumentParser:
    p = add_subcommand(sub, "demo", HELP, __doc__)
    p.add_argument("--output-dir", default="flowlens_demo", help="folder (default: ./flowlens_demo)")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="model to use (default: builtin:tabletop when installed, else synthetic)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated episodes (default: 0)")
    p.add_argument(
        "--frames", type=int, default=40,
        help="frames per generated synthetic episode (at most the episode's own length; default: 40)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from flowlens.pipeline.demo import run_demo

    run_demo(
        args.output_dir,
        checkpoint=args.checkpoint,
        seed=args.seed,
        progress=not args.no_progress,
        num_frames=args.frames,
    )
    return 0
