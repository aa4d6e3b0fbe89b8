"""Every ``>>>`` example in flowlens's docstrings runs and gives what it shows (issue 12).

The modules are found by reading the source (any ``.py`` file under ``flowlens/`` containing
``>>>``), so a new example is tested without listing it here. Examples are small and never run a
model; a module whose examples do not need JAX must not import it.
"""

from __future__ import annotations

import doctest
import importlib
import pathlib
import subprocess
import sys

import pytest

import flowlens

ROOT = pathlib.Path(flowlens.__file__).parent
MODULES = sorted(
    ".".join(("flowlens", *p.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
    for p in ROOT.rglob("*.py")
    if ">>>" in p.read_text(encoding="utf-8")
)
FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def test_the_examples_are_found():
    assert len(MODULES) >= 9 and "flowlens.analysis.rollout" in MODULES and "flowlens.io.files" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    assert tests, f"{name} has '>>>' in its source but doctest finds no example in it"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (see the output above)"


def test_the_examples_do_not_import_jax():
    # a fresh interpreter: the modules with examples (none of them model code) and their examples
    code = (
        "import doctest, importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    m = importlib.import_module(name)\n"
        "    doctest.testmod(m, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)\n"
        "print('jax' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "False"
