"""Flags shared by the subcommands, and their translation into pipeline objects.

The flags keep the spelling of the legacy ``example_attention_viz.py`` script (``--video``,
``--frame-idx``, ``--prompt``, ``--checkpoint``, ``--output``, ``--layers``, ``--viz-type``,
``--data-root``, ``--group``, ``--episode-idx``, ``--frame-step``, ``--fps``, ``--no-video``,
``--output-dir``); its model-shape knobs (``--pi05``, ``--action-horizon``, ``--max-token-len``, ...)
are accepted but no longer needed: flowlens reads shapes from the checkpoint.
"""

from __future__ import annotations

import argparse
import sys

from flowlens.pipeline.render import VIZ_CHOICES
from flowlens.pipeline.spec import METHODS, AnalysisSpec

CHECKPOINT_HELP = (
    "openpi checkpoint directory (holding params/), 'builtin:tabletop' for the embedded model, "
    "or 'synthetic' (synthetic attention, no model: every command runs without weights)"
)
INTERPOLATIONS = ("nearest", "bilinear")
LEGACY_IGNORED = (
    "paligemma_variant",
    "action_expert_variant",
    "action_horizon",
    "max_token_len",
    "num_image_tokens",
    "activations_root",
)


def add_subcommand(sub, name: str, help_text: str, doc: str | None) -> argparse.ArgumentParser:
    """A subcommand parser whose description is the module docstring (examples kept as written)."""
    return sub.add_parser(
        name,
        help=help_text,
        description=(doc or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_source_args(p: argparse.ArgumentParser, *, tree: bool = True) -> None:
    g = p.add_argument_group("episode")
    g.add_argument("--video", help="rollout video (.mp4), e.g. data/libero/90/videos/rollout_task0_ep0.mp4")
    g.add_argument("--episode", help="any episode: .mp4, LeRobot v2 dataset root#episode, or flowlens episode folder")
    if tree:
        g.add_argument("--data-root", help="LIBERO rollout tree: <data-root>/<group>/videos/rollout_task<i>_ep<j>.mp4")
        g.add_argument("--group", default="90", help="group under --data-root (default: 90)")
        g.add_argument(
            "--episode-idx",
            type=int,
            default=0,
            help="which video of the group, in (task, episode) order (default: 0)",
        )
    g.add_argument("--prompt", help="task instruction (needed when the episode's files carry none)")
    g.add_argument(
        "--rotate180",
        action="store_true",
        help="frames are the raw simulator render and the model saw them rotated by 180°",
    )


def add_frame_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("frames")
    g.add_argument("--frames", type=int, nargs="+", metavar="I", help="frame indices (default: every --frame-step)")
    g.add_argument(
        "--frame-step", type=int, default=10, help="visit every N-th frame when --frames is not given (default: 10)"
    )


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    g.add_argument(
        "--tokenizer",
        help="PaliGemma SentencePiece file (paligemma_tokenizer.model) for real "
        "checkpoints (default: $FLOWLENS_TOKENIZER or openpi's cache)",
    )
    g.add_argument("--config", help="config name (pi0_libero, pi05_libero, ...) for what parameter shapes cannot tell")
    g.add_argument("--seed", type=int, default=0, help="sampling noise seed (default: 0)")
    # Legacy knobs: accepted so old command lines keep working; shapes now come from the checkpoint.
    for flag in ("--paligemma-variant", "--action-expert-variant", "--activations-root"):
        g.add_argument(flag, help=argparse.SUPPRESS)
    for flag in ("--action-horizon", "--max-token-len", "--num-image-tokens"):
        g.add_argument(flag, type=int, help=argparse.SUPPRESS)
    g.add_argument("--pi05", action="store_true", help=argparse.SUPPRESS)
    g.add_argument("--no-pi05", action="store_true", help=argparse.SUPPRESS)


def add_analysis_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("analysis")
    g.add_argument(
        "--method",
        choices=METHODS,
        default="rollout",
        help="raw: the query's attention row at each layer; rollout: relevance of each input after "
        "each layer (Abnar & Zuidema 2020); flow: attention flow; norm, alti, value_zeroing, alti_flow: "
        "value-based attributions (Kobayashi 2020, Ferrando 2022, Mohebbi 2023, flow over ALTI); relevancy, ig: "
        "gradient methods (Chefer 2021, Integrated Gradients) of --target from the run's --seed noise; these "
        "need a model: a checkpoint or builtin:tabletop (default: rollout)",
    )
    g.add_argument(
        "--query",
        default="action:0",
        help="query tokens: action:0 (first action token, default), action:<i>, actions (all, "
        "averaged), last (last action token), state (Pi0's state token)",
    )
    g.add_argument(
        "--heads",
        type=int,
        nargs="+",
        metavar="H",
        help="head indices to average (default: the mean over all heads)",
    )
    g.add_argument(
        "--step",
        default="0",
        help="denoising step index (0 is t = 1.0) or 'all' (mean over steps, plus a per-step figure "
        "with --viz-type steps) (default: 0)",
    )
    g.add_argument(
        "--layers",
        type=int,
        nargs="+",
        metavar="L",
        help="layers to draw (default: every layer); the last one is the focus layer of single-layer "
        "views (combined, video, compare)",
    )


def add_figure_args(p: argparse.ArgumentParser, *, default_viz: str = "all") -> None:
    g = p.add_argument_group("figures")
    g.add_argument(
        "--viz-type",
        nargs="+",
        choices=VIZ_CHOICES,
        default=[default_viz],
        metavar="TYPE",
        help="image | text | combined | evolution | steps | heads | actions | all (the first four, "
        "default) | full (every type); several allowed",
    )
    g.add_argument("--dpi", type=int, default=110, help="PNG resolution (default: 110)")
    g.add_argument(
        "--interpolation",
        choices=INTERPOLATIONS,
        default="nearest",
        help="heatmaps on frames: nearest = one flat block per patch, the patch grid the model saw "
        "(default, as in the HTML report); bilinear = smoothed between patch centres",
    )
    g.add_argument(
        "--camera-scale",
        choices=("shared", "camera"),
        default="shared",
        help="shared = one colour scale for all cameras (default: compare their mass); camera = each "
        "camera on its own scale (see where a camera with little mass looks); the colorbars say which",
    )
    g.add_argument(
        "--head-scale",
        choices=("head", "shared"),
        default="head",
        help="heads figure: head = each panel from 0 to its own max, written under it (default: heads "
        "with little mass stay visible); shared = one colour scale for every head",
    )


def spec_from(args) -> AnalysisSpec:
    return AnalysisSpec.create(
        method=args.method, query=args.query, heads=args.heads, step=args.step, layers=args.layers
    )


def note_legacy(args) -> None:
    """Say (once, on stderr) which legacy flags were accepted but are not needed any more."""
    used = [f"--{name.replace('_', '-')}" for name in LEGACY_IGNORED if getattr(args, name, None) is not None]
    if used:
        print(
            f"flowlens: note: {', '.join(used)} not needed: shapes are read from the checkpoint; ignored.",
            file=sys.stderr,
        )


def config_from(args) -> str | None:
    if args.config:
        return args.config
    if getattr(args, "pi05", False):
        return "pi05_libero"
    if getattr(args, "no_pi05", False):
        return "pi0_libero"
    return None


def backend_from(args):
    from flowlens.pipeline.backends import load_backend

    note_legacy(args)
    return load_backend(args.checkpoint, tokenizer=args.tokenizer, config=config_from(args))


def keep_open(args, source):
    """Close ``source`` (its video files) when the command ends (``main`` owns ``args.exit_stack``)."""
    stack = getattr(args, "exit_stack", None)
    return stack.enter_context(source) if stack is not None else source


def prompt_flag(value: str | None) -> str | None:
    """``--prompt`` as given, or a FlowlensError when it is empty (an empty prompt is never meant)."""
    if value is not None and not value.strip():
        from flowlens.errors import FlowlensError

        raise FlowlensError(
            f"--prompt is empty ({value!r}); give the task instruction, e.g. --prompt \"pick up the black "
            'bowl\", or leave --prompt out when the file name or a tasks.json next to the videos carries it.'
        )
    return value


def source_from(args):
    from flowlens.pipeline.sources import open_source

    tree = getattr(args, "data_root", None)
    return keep_open(
        args,
        open_source(
            video=args.video,
            episode=args.episode,
            data_root=tree,
            group=getattr(args, "group", None),
            episode_idx=getattr(args, "episode_idx", None),
            prompt=prompt_flag(args.prompt),
            rotate180=args.rotate180,
        ),
    )


def smooth_from(args) -> bool:
    """``--interpolation bilinear`` → smoothed heatmaps; nearest (the default) → the patch grid."""
    return getattr(args, "interpolation", "nearest") == "bilinear"


def figure_options_from(args) -> dict:
    """The FigureConfig fields the figure flags set (``--interpolation``, ``--camera-scale``, ``--head-scale``)."""
    return {
        "smooth": smooth_from(args),
        "camera_scale": getattr(args, "camera_scale", "shared"),
        "head_scale": getattr(args, "head_scale", "head"),
    }


def say(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)
