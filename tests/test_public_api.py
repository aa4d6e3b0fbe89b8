"""The public surface: every name in flowlens.__all__ resolves; the core import stays light."""

import subprocess
import sys

import flowlens


def test_every_exported_name_resolves():
    for name in flowlens.__all__:
        assert getattr(flowlens, name) is not None, name


def test_import_flowlens_loads_no_jax_numba_or_matplotlib():
    code = ("import sys, flowlens; "
            "print(sorted(m for m in ('jax', 'numba', 'matplotlib', 'flax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
