"""``flowlens`` console entry point: parse, dispatch to a subcommand, turn FlowlensError into one line.

    flowlens single  ...   one frame → figures           flowlens episode ...  many frames + MP4/GIF
    flowlens compare ...   success vs failure            flowlens report  ...  interactive HTML
    flowlens demo [--output-dir DIR]                     the whole tour on the embedded model
    flowlens hypothesis FILE.py --episode ...            test routing hypotheses over episodes
    flowlens batch ...     many episodes → store + tables, locally or on Ray (--engine ray)

The legacy spelling ``flowlens --mode single|episode ...`` is accepted too. Bad input exits with
code 2 and one line on stderr (``flowlens: error: ...``), never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Sequence

from flowlens.cli import batch, compare, demo, episode, hypothesis, report, single
from flowlens.cli.caches import enable_jax_cache
from flowlens.errors import FlowlensError

SUBCOMMANDS = {"single": single, "episode": episode, "compare": compare, "report": report, "demo": demo,
               "hypothesis": hypothesis, "batch": batch}
MODES = ("single", "episode", "compare", "report", "demo")


def build_parser() -> argparse.ArgumentParser:
    from flowlens import __version__

    parser = argparse.ArgumentParser(
        prog="flowlens",
        description="See how information flows through Pi0 / Pi0.5 policies: attention on frames "
        "and words, per layer, head and denoising step.",
        epilog="Legacy spelling: flowlens --mode single|episode ... (same flags). "
        "Try: flowlens demo --output-dir /tmp/flowlens_demo",
    )
    parser.add_argument("--version", action="version", version=f"flowlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{single,episode,compare,report,demo,hypothesis,batch}")
    for module in SUBCOMMANDS.values():
        module.add_parser(sub)
    return parser


def rewrite_mode(argv: Sequence[str]) -> list[str]:
    """``--mode X`` / ``--mode=X`` anywhere → subcommand ``X`` first (the legacy script's spelling)."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--mode" or arg.startswith("--mode="):
            if arg == "--mode":
                if i + 1 >= len(argv):
                    raise FlowlensError(f"--mode needs a value: one of {list(MODES)}.")
                mode = argv[i + 1]
                rest = argv[:i] + argv[i + 2 :]
            else:
                mode = arg.partition("=")[2]
                rest = argv[:i] + argv[i + 1 :]
            if mode not in MODES:
                from flowlens.errors import unknown_name_error

                raise unknown_name_error("--mode", mode, MODES)
            given = [a for a in rest if a in SUBCOMMANDS]
            if given and given[0] != mode:
                raise FlowlensError(f"--mode {mode} conflicts with the subcommand {given[0]!r}; give one of them.")
            return rest if given else [mode, *rest]
    return argv


def _blas_threads(n: int):
    """Cap BLAS threads while a command runs: flowlens's numpy work is many small products, where
    BLAS threads only add contention (8× slower on a busy 2-core machine); JAX keeps its own threads."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return contextlib.nullcontext()
    return threadpool_limits(n, user_api="blas")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


@contextlib.contextmanager
def _short_warnings():
    """Show warnings as one ``flowlens: warning: ...`` line each (not file:line plus source)."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"flowlens: warning: {_one_line(message)}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flowlens`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = rewrite_mode(argv)
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # argparse: --help (0) or a usage error (2)
            return int(e.code) if isinstance(e.code, int) else (0 if e.code is None else 2)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        enable_jax_cache()
        with _blas_threads(1), _short_warnings(), contextlib.ExitStack() as args.exit_stack:
            return int(args.run(args) or 0)
    except FlowlensError as e:
        print(f"flowlens: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permissions: say which file, no traceback
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"flowlens: error: {_one_line(e.strerror or e)}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "flowlens: interrupted; every file already written is complete (re-run to resume).",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
