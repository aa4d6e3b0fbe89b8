"""``flowlens batch``: capture and analyse many episodes into a capture store and tidy tables.

    flowlens batch --episodes-dir data/episodes --checkpoint builtin:tabletop --frame-step 8 \\
        --store runs/captures --output-dir runs/tables
    flowlens batch ... --engine ray --address auto --actors 8 --gpus-per-actor 1

Runs in this process by default (--engine local), or on a Ray cluster (--engine ray: one actor per
device holding the model; needs pip install 'flowlens[ray]'). Resumable on either engine: a re-run
commits only the episodes not done yet. Writes <output-dir>/results.parquet (one row per frame and
layer: the share of the query's score per token group) and <output-dir>/episodes.parquet (one row
per episode). See docs/scale_out.md for cluster runs.
"""

from __future__ import annotations

import argparse

from flowlens.cli.options import add_analysis_args, add_frame_args, add_subcommand, say, spec_from
from flowlens.errors import FlowlensError

HELP = "many episodes → capture store + tables, locally or on a Ray cluster (resumable)"


def add_parser(sub) -> argparse.ArgumentParser:
    from flowlens.io.store import POLICIES
    from flowlens.pipeline.engines import ENGINES

    p = add_subcommand(sub, "batch", HELP, __doc__)
    g = p.add_argument_group("episodes")
    g.add_argument("--episodes", nargs="+", metavar="PATH", help="episode paths / specs (open_episode)")
    g.add_argument("--episodes-dir", metavar="DIR", help="every episode under DIR (list_episodes)")
    add_frame_args(p)
    m = p.add_argument_group("model")
    m.add_argument("--checkpoint", default="builtin:tabletop", help="model (default: builtin:tabletop)")
    m.add_argument("--seed", type=int, default=0, help="sampling noise seed (default: 0)")
    add_analysis_args(p)
    o = p.add_argument_group("output")
    o.add_argument("--store", required=True, metavar="DIR", help="capture store folder (shared by every worker)")
    o.add_argument("--output-dir", required=True, metavar="DIR", help="folder of the batch tables")
    o.add_argument("--policy", default="rows_for_rollout", choices=POLICIES, help="storage policy (new stores)")
    o.add_argument("--precision", default="float16", help="store precision (new stores; default: float16)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    e = p.add_argument_group("engine")
    e.add_argument("--engine", default="local", choices=ENGINES, help="where episodes run (default: local)")
    e.add_argument("--address", help="Ray cluster address (e.g. auto, ray://head:10001); default: a local Ray")
    e.add_argument("--actors", type=int, default=2, help="Ray actors, one per device (default: 2)")
    e.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per Ray actor (default: 0)")
    e.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs per Ray actor (default: 1)")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from flowlens.pipeline.engines import make_engine, run_job
    from flowlens.pipeline.job import BatchJob

    if bool(args.episodes) == bool(args.episodes_dir):
        raise FlowlensError("give the episodes with either --episodes PATH... or --episodes-dir DIR (one of them).")
    if args.episodes_dir:
        from flowlens.io.sources import list_episodes

        episodes = list_episodes(args.episodes_dir)
    else:
        episodes = args.episodes
    engine = make_engine(
        args.engine,
        **({"actors": args.actors, "address": args.address, "gpus_per_actor": args.gpus_per_actor,
            "cpus_per_actor": args.cpus_per_actor} if args.engine == "ray" else {}),
    )
    job = BatchJob(
        episodes=tuple(episodes), store=args.store, out_dir=args.output_dir, checkpoint=args.checkpoint,
        spec=spec_from(args), every=args.frame_step, frames=tuple(args.frames) if args.frames else None,
        policy=args.policy, precision=args.precision, seed=args.seed,
    )
    say(f"flowlens batch · {len(job.episodes)} episodes · model: {job.checkpoint} · engine: {engine.name}")
    result = run_job(job, engine=engine, progress=not args.no_progress)
    resumed = f" ({result.skipped} done by an earlier run)" if result.skipped else ""
    say(
        f"  {result.committed} episodes committed{resumed} in {result.seconds:.1f} s"
        + (f"; {result.replaced} dead Ray actors replaced" if result.replaced else ""),
        f"  store: {job.store}",
        f"  tables: {job.out_dir}/results.parquet, {job.out_dir}/episodes.parquet",
    )
    return 0
