"""Shared test set-up: CPU JAX, headless matplotlib, seeded randomness."""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
# JAX's persistent compilation cache, shared by test runs on this machine and by the CLI commands the
# tests start (a test folder, not the user's cache): a repeated run loads the compiled model programs.
os.environ.setdefault("FLOWLENS_JAX_CACHE_DIR", os.path.join(tempfile.gettempdir(), "flowlens-tests-jax-cache"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ["FLOWLENS_JAX_CACHE_DIR"])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
