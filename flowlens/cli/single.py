"""``flowlens single``: the attention figures of one frame of one episode.

    flowlens single --video data/libero/90/videos/rollout_task0_ep0.mp4 --frame-idx 10 \\
        --prompt "pick up the black bowl and place it on the plate" --checkpoint synthetic \\
        --output attention.png --layers 0 8 17 --viz-type all
"""

from __future__ import annotations

import argparse

from flowlens.cli.options import (
    add_analysis_args,
    add_figure_args,
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

HELP = "figures of one frame (image / text / combined / evolution / ...)"


def add_parser(sub) -> argparse.ArgumentParser:
    p = add_subcommand(sub, "single", HELP, __doc__)
    add_source_args(p)
    p.add_argument("--frame-idx", type=int, default=0, help="frame index (default: 0; negative counts from the end)")
    add_model_args(p)
    add_analysis_args(p)
    p.add_argument(
        "--target",
        default="first-action",
        help="scalar the gradient methods (relevancy, ig) explain: first-action (the sampled first action "
        "along its own direction, default), dim:D (dimension D of the first action), heading:DX,DY (the "
        "first 5 actions' dims 0, 1 along (DX, DY)); other commands use first-action",
    )
    add_figure_args(p)
    p.add_argument(
        "--output",
        default="attention.png",
        help="output PNG; with several viz types, <stem>_<type>.png beside it (default: attention.png)",
    )
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from flowlens.pipeline.frames import run_single
    from flowlens.pipeline.render import check_writable, expand_viz, output_paths
    from flowlens.pipeline.sources import source_prompt

    spec = spec_from(args)
    kinds = expand_viz(args.viz_type)
    for folder in {p.parent for p in output_paths(args.output, kinds).values()}:  # before any work
        check_writable(folder, "--output")
    source = source_from(args)
    index = source.check_index(args.frame_idx)
    prompt = source_prompt(source)
    backend = backend_from(args)
    say(
        f"flowlens single · {source.name} · frame {index} of {len(source)} · model: {backend.name}",
        f"  prompt: {short_text(prompt)}",
        f"  {spec.method_label} · query: {spec.query_label} · {spec.heads_label} · step {spec.step}",
    )
    written = run_single(
        source,
        index,
        backend,
        spec,
        viz=kinds,
        output=args.output,
        seed=args.seed,
        dpi=args.dpi,
        figure_options=figure_options_from(args),
        target=args.target,
    )
    for kind, path in written.items():
        say(f"  wrote {kind:<9} {path}")
    return 0
