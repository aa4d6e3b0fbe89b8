"""The compile caches of command-line runs (flowlens.cli.caches)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flowlens.cli.caches import ENV_VAR, enable_jax_cache, jax_cache_dir


def test_cache_dir_follows_the_override_then_xdg_then_home():
    assert jax_cache_dir({ENV_VAR: "/x/jax", "XDG_CACHE_HOME": "/y"}) == Path("/x/jax")
    assert jax_cache_dir({"XDG_CACHE_HOME": "/y"}) == Path("/y/flowlens/jax")
    assert jax_cache_dir({}) == Path("~").expanduser() / ".cache" / "flowlens" / "jax"


def test_empty_override_turns_the_cache_off():
    assert jax_cache_dir({ENV_VAR: ""}) is None
    assert enable_jax_cache({ENV_VAR: ""}) is None


def test_small_programs_are_cached_in_the_user_cache_dir(tmp_path):
    """A fresh process: enable the cache before JAX loads, compile a tiny program, find it on disk
    (JAX's default 1 s minimum compile time would skip it)."""
    code = (
        "from flowlens.cli.caches import enable_jax_cache\n"
        "folder = enable_jax_cache()\n"
        "import jax, jax.numpy as jnp\n"
        "jax.jit(lambda x: x * 3 + 1)(jnp.ones(3)).block_until_ready()\n"
        "print(folder)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != ENV_VAR}
    env.update(XDG_CACHE_HOME=str(tmp_path), JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "flowlens" / "jax"
    assert done.stdout.strip() == str(folder)
    assert any(p.name.startswith("jit__lambda") for p in folder.iterdir())
