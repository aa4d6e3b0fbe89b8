"""``flowlens hypothesis``: run a hypothesis file over episodes; write the test table, figure and HTML.

    flowlens hypothesis my_hypotheses.py --episode runs/episodes/ --checkpoint builtin:tabletop \\
        --frame-step 5 --output-dir hypotheses_out/

The hypothesis file is YOUR OWN PYTHON CODE and is executed, like a pytest file: only run files you
trust. It defines ``flowlens.hypotheses.Hypothesis`` objects at module level (or a list
``HYPOTHESES``); each frame's evidence carries the labels episode, frame, success and prompt, so
``Hypothesis(..., by="success")`` compares successful with failed episodes.

--episode takes any episode ``flowlens episode`` reads (.mp4, LeRobot root#index, flowlens episode
folder) or a folder of them, several allowed. Writes under --output-dir: hypotheses.csv,
hypotheses.parquet, values.parquet (per-frame values), hypotheses.png and hypotheses.html.
Resumable: each frame's values are committed as it finishes; re-run the same command after a
kill and finished frames are skipped.
"""

from __future__ import annotations

import argparse

from flowlens.cli.options import add_model_args, add_subcommand, backend_from, prompt_flag, say

HELP = "run a hypothesis file (your own Python, executed) over episodes: tests, figure, HTML (resumable)"


def add_parser(sub) -> argparse.ArgumentParser:
    p = add_subcommand(sub, "hypothesis", HELP, __doc__)
    p.add_argument("hypothesis_file", help="Python file defining Hypothesis objects (it is executed: trust it)")
    g = p.add_argument_group("episodes")
    g.add_argument("--episode", nargs="+", required=True, metavar="PATH",
                   help="episodes (.mp4, LeRobot root#index, episode folder) or folders of them")
    g.add_argument("--prompt", help="task instruction (for episodes whose files carry none)")
    g.add_argument("--frames", type=int, nargs="+", metavar="I", help="frame indices (default: every --frame-step)")
    g.add_argument("--frame-step", type=int, default=10, help="every N-th frame (default: 10)")
    add_model_args(p)
    t = p.add_argument_group("statistics")
    t.add_argument("--confidence", type=float, default=0.95, help="bootstrap interval level (default: 0.95)")
    t.add_argument("--n-resamples", type=int, default=9999,
                   help="bootstrap / permutation resamples (default: 9999)")
    o = p.add_argument_group("output")
    o.add_argument("--output-dir", default="hypotheses_output", help="folder (default: hypotheses_output)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from flowlens.hypotheses.runner import run_hypothesis_file
    from flowlens.io.sources import list_episodes

    episodes = [e for path in args.episode for e in list_episodes(path)]
    prompt = prompt_flag(args.prompt)
    backend = backend_from(args)
    say(f"flowlens hypothesis · {args.hypothesis_file} · {len(episodes)} episode(s) · model: {backend.name}")
    out = run_hypothesis_file(args.hypothesis_file, episodes, backend, args.output_dir, every=args.frame_step,
                              frames=args.frames, seed=args.seed, progress=not args.no_progress,
                              confidence=args.confidence, n_resamples=args.n_resamples,
                              **({"prompt": prompt} if prompt else {}))
    kept = f" ({out['skipped']} kept from the earlier run)" if out["skipped"] else ""
    say(f"  {out['computed']} frames evaluated{kept}")
    for _, r in out["table"].iterrows():
        sweep = f" [{r.sweep}]" if r.sweep else ""
        say(f"  {r.hypothesis}{sweep}: effect {r.effect:+.4g} [{r.ci_low:.4g}, {r.ci_high:.4g}], "
            f"p {r.p_value:.3g} (adjusted {r.p_adjusted:.3g}), n {int(r.n)}")
    for kind, path in out["paths"].items():
        say(f"  wrote {kind:<8} {path}")
    return 0
