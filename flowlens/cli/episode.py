"""``flowlens episode``: figures for many frames of an episode, plus attention over time (MP4 + GIF).

    flowlens episode --data-root data/libero --group 90 --episode-idx 0 --frames 0 10 20 30 40 \\
        --checkpoint synthetic --output-dir attention_viz_output/ --viz-type all

Resumable: frames already written (with the same settings) are skipped on a re-run.
"""

from __future__ import annotations

import argparse

from flowlens.cli.options import (
    add_analysis_args,
    add_figure_args,
    add_frame_args,
    add_model_args,
    add_source_args,
    add_subcommand,
    backend_from,
    figure_options_from,
    say,
    source_from,
    spec_from,
)
from flowlens.errors import short_text

HELP = "figures for many frames of an episode, MP4 / GIF of attention over time (resumable)"


def add_parser(sub) -> argparse.ArgumentParser:
    p = add_subcommand(sub, "episode", HELP, __doc__)
    add_source_args(p)
    add_frame_args(p)
    add_model_args(p)
    add_analysis_args(p)
    add_figure_args(p)
    o = p.add_argument_group("output")
    o.add_argument("--output-dir", default="attention_viz_output", help="folder (default: attention_viz_output)")
    o.add_argument("--fps", type=float, default=2.0, help="frames per second of the attention video (default: 2)")
    o.add_argument("--no-video", action="store_true", help="do not write the MP4 / GIF of attention over time")
    o.add_argument("--no-gif", action="store_true", help="write the MP4 but not the GIF")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument(
        "--store",
        metavar="DIR",
        help="keep each frame's capture in a capture store (flowlens.io.store) and reuse it on later runs "
        "with other figure settings instead of running the model again",
    )
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from flowlens.pipeline.episode import run_episode
    from flowlens.pipeline.frames import frame_indices
    from flowlens.pipeline.render import check_writable, expand_viz
    from flowlens.pipeline.sources import source_prompt

    spec = spec_from(args)
    kinds = expand_viz(args.viz_type)
    check_writable(args.output_dir, "--output-dir")  # before any work
    source = source_from(args)
    indices = frame_indices(len(source), args.frames, args.frame_step)
    prompt = source_prompt(source)
    backend = backend_from(args)
    say(
        f"flowlens episode · {source.name} ({source.path}) · {len(indices)} of {len(source)} frames · "
        f"model: {backend.name}",
        f"  prompt: {short_text(prompt)}",
        f"  {spec.method_label} · query: {spec.query_label} · {spec.heads_label} · step {spec.step}",
    )
    summary = run_episode(
        source,
        backend,
        spec,
        out_dir=args.output_dir,
        frames=indices,
        viz=kinds,
        fps=args.fps,
        video=not args.no_video,
        gif=not (args.no_video or args.no_gif),
        progress=not args.no_progress,
        seed=args.seed,
        dpi=args.dpi,
        store=args.store,
        log=say,
        figure_options=figure_options_from(args),
    )
    computed = len(summary["frames"]) - len(summary["skipped"])
    resumed = f" ({len(summary['skipped'])} kept from the earlier run)" if summary["skipped"] else ""
    say(
        f"  {computed} frames × {len(kinds)} figures written{resumed} under {summary['output_dir']}/frame_XXXX/"
    )
    for kind, path in summary["episode_files"].items():
        say(f"  wrote {kind:<16} {path}")
    return 0
