"""The one-way data flow, checked on the source: which package may import which (issue 12).

model → Capture (core) → TokenGraph (core) → analyses → projection → figures / report / CLI. Every
``import flowlens.X`` in the package, at module level or inside a function, must run down this
table; and no two modules import each other (no import circle), lazily or not.
"""

import ast
import pathlib

import flowlens

ROOT = pathlib.Path(flowlens.__file__).parent

# package → the packages it may import (besides itself). Lower layers never import higher ones.
ALLOWED = {
    "errors": set(),
    "_lazy": set(),
    "core": {"errors"},
    "analysis": {"core", "errors", "_lazy"},
    "projection": {"core", "errors"},
    # attribution methods: pure functions of what the model computed (gradients, captures), like analyses;
    # the value-based ones recompute values / norms / MLP from the residual with the model's building blocks
    "attribution": {"core", "errors", "analysis", "model", "_lazy"},
    "model": {"core", "errors"},
    "io": {"core", "errors"},
    "testing": {"core", "errors", "analysis"},
    "figures": {"core", "errors", "analysis", "projection", "io"},
    "report": {"core", "errors", "analysis", "projection", "figures", "io"},
    "tasks": {"core", "errors", "model", "io", "analysis", "projection", "testing"},
    "pipeline": {"core", "errors", "analysis", "projection", "model", "io", "testing", "figures", "report",
                 "tasks", "attribution"},
    # causal: knockout / patching sweeps run the model; the embedded task batches frames and scores chunks
    "causal": {"core", "errors", "model", "tasks", "_lazy"},
    # hypotheses: statistics over frames; runs the model through pipeline backends, its interventions
    # (knockouts, patching) through causal's one batched path, and draws its table with figures.
    "hypotheses": {"core", "errors", "analysis", "model", "io", "pipeline", "figures", "tasks", "causal"},
    "cli": {"core", "errors", "pipeline", "io", "flowlens", "hypotheses"},
    "__main__": {"cli"},
    "flowlens": {"core", "errors", "analysis", "projection", "io", "_lazy"},
}


def module_name(path: pathlib.Path) -> str:
    parts = ("flowlens",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "flowlens"


def flowlens_imports(path: pathlib.Path):
    """(imported module, line) for every absolute flowlens import in the file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("flowlens"):
            yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names if a.name.startswith("flowlens"))


SOURCES = sorted(ROOT.rglob("*.py"))


def test_every_package_is_in_the_table():
    assert {package_of(module_name(p)) for p in SOURCES} <= set(ALLOWED)


def test_imports_run_down_the_data_flow():
    wrong = []
    for path in SOURCES:
        here = package_of(module_name(path))
        for target, line in flowlens_imports(path):
            there = package_of(target)
            if there != here and there not in ALLOWED[here]:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line} {here} → {there}")
    assert not wrong, "imports running back up the data flow:\n" + "\n".join(wrong)


def test_no_two_modules_import_each_other():
    modules = {module_name(p): p for p in SOURCES}
    edges = {m: {t for t, _ in flowlens_imports(p) if t in modules and t != m} for m, p in modules.items()}
    circles = sorted(f"{a} ↔ {b}" for a in edges for b in edges[a] if a < b and a in edges.get(b, ()))
    # A package's __init__ re-exporting its own modules is not a circle of the data flow.
    circles = [c for c in circles if not any(c.startswith(f"{pkg} ↔ {pkg}.") for pkg in modules)]
    assert not circles, "import circles:\n" + "\n".join(circles)
