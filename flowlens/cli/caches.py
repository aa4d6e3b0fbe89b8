"""Compile caches for command-line runs: JAX's persistent compilation cache in a user cache folder.

Concept: a ``flowlens`` command spends most of a cold run compiling (the model's XLA programs, the
numba flow kernels). numba's kernels are cached on disk by the kernels themselves (``cache=True``;
numba falls back to its user-wide cache folder, or ``NUMBA_CACHE_DIR``, where the install location is
read-only). JAX's programs are cached here, for CLI runs only: :func:`enable_jax_cache` is called by
:func:`flowlens.cli.main.main`, never at ``import flowlens``, so library users keep JAX's settings.

Folder: ``$FLOWLENS_JAX_CACHE_DIR`` when set (an empty value turns the cache off), else
``$XDG_CACHE_HOME/flowlens/jax``, else ``~/.cache/flowlens/jax``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_VAR = "FLOWLENS_JAX_CACHE_DIR"


def jax_cache_dir(environ: dict | None = None) -> Path | None:
    """The JAX compilation-cache folder for this environment, or None when turned off."""
    env = os.environ if environ is None else environ
    if ENV_VAR in env:
        return Path(env[ENV_VAR]).expanduser() if env[ENV_VAR] else None
    base = env.get("XDG_CACHE_HOME") or str(Path("~").expanduser() / ".cache")
    return Path(base) / "flowlens" / "jax"


def enable_jax_cache(environ: dict | None = None) -> Path | None:
    """Point JAX's persistent compilation cache at :func:`jax_cache_dir`; cache every program.

    The embedded model's programs compile in well under JAX's default 1 s threshold, so the
    minimum compile time is set to 0 (and the minimum entry size to 0). When JAX is not imported yet
    the settings go into the environment, which JAX reads at import (no JAX import here: commands
    that read capture files never load it). Returns the folder, or None when turned off or unwritable.
    """
    folder = jax_cache_dir(environ)
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: run uncached rather than fail
    settings = {
        "jax_compilation_cache_dir": str(folder),
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }
    if "jax" in sys.modules:
        jax = sys.modules["jax"]
        for name, value in settings.items():
            jax.config.update(name, value)
    else:
        for name, value in settings.items():
            os.environ.setdefault(name.upper(), str(value))
    return folder
