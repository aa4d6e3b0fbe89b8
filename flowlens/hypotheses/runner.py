"""Running a hypothesis file over episodes: resumable per-frame values, then the test table, figure and HTML.

A hypothesis file is the user's own Python (like a pytest file): it is *executed* (``runpy``) and
every ``Hypothesis`` it defines at module level is collected, in definition order — or the list
``HYPOTHESES`` when it defines one. Only run files you trust.

``run_hypothesis_file`` writes under ``out_dir``::

    frames/                     the per-frame values (flowlens.io.batch: one atomic part per frame;
                                a rerun skips finished frames, so a killed run resumes)
    hypotheses.csv / .parquet   the test table (flowlens.hypotheses.evaluate)
    values.parquet              the per-frame values behind it
    hypotheses.png              the figure (flowlens.figures.hypotheses)
    hypotheses.html             an HTML section: the table and the figure (all text escaped)

Each frame's ``Evidence`` carries the labels ``episode``, ``frame``, ``success`` (the episode's
outcome, None when unknown) and ``prompt``. A run folder belongs to one file's contents: resuming
with an edited file is refused (the table would mix two versions).
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import runpy
from collections.abc import Sequence
from pathlib import Path

from flowlens.errors import FlowlensError
from flowlens.hypotheses.evaluate import check_hypotheses, summarize
from flowlens.hypotheses.evidence import Evidence
from flowlens.hypotheses.hypothesis import VALUE_COLUMNS, Hypothesis, frame_values

TABLE_NAME = "hypotheses"


def load_hypothesis_file(path: str | os.PathLike) -> list[Hypothesis]:
    """Execute a hypothesis file and return its hypotheses (``HYPOTHESES``, else every module-level
    ``Hypothesis`` in definition order)."""
    path = Path(path)
    if not path.is_file():
        raise FlowlensError(f"hypothesis file {str(path)!r} does not exist; pass a .py file that defines Hypothesis objects.")
    if path.suffix != ".py":
        raise FlowlensError(f"hypothesis file {str(path)!r} must be a Python file (.py).")
    namespace = runpy.run_path(str(path), run_name="flowlens_hypotheses")
    found = namespace.get("HYPOTHESES")
    if found is None:
        found = [v for v in namespace.values() if isinstance(v, Hypothesis)]
    if not found:
        raise FlowlensError(
            f"hypothesis file {str(path)!r} defines no Hypothesis; write e.g. "
            "H = Hypothesis('words beat chance', lambda ev: ..., null=0.5) at module level."
        )
    return check_hypotheses(found)


def html_section(table, *, title: str, png: bytes | None = None, alpha: float = 0.05) -> str:
    """An HTML ``<section>`` with the test table (every text escaped) and the figure inlined."""
    cols = ["hypothesis", "sweep", "a", "b", "n", "effect", "ci_low", "ci_high", "p_value", "p_adjusted"]

    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr" + (' class="sig"' if float(r["p_adjusted"]) < alpha else "") + ">"
        + "".join(f"<td>{cell(r[c])}</td>" for c in cols) + "</tr>"
        for _, r in table.iterrows()
    )
    notes = "".join(
        f"<li><b>{html.escape(str(n))}</b>: {html.escape(str(d))}</li>"
        for n, d in dict(zip(table.hypothesis, table.description, strict=True)).items() if d
    )
    img = (f'<img alt="hypothesis tests" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
           if png else "")
    return (f'<section class="flowlens-hypotheses"><h2>{html.escape(title)}</h2>'
            f"<p>effect = mean(a) − mean(b); interval: bootstrap (BCa); p: permutation test; p_adjusted: "
            f"within each hypothesis's sweep; rows with p_adjusted &lt; {alpha:g} are marked.</p>"
            f"<ul>{notes}</ul><table><tr>{head}</tr>{body}</table>{img}</section>")


def _page(section: str) -> str:
    style = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:2px 6px}tr.sig{background:#fde8e6}img{max-width:100%}")
    return f'<!doctype html><html><head><meta charset="utf-8"><style>{style}</style></head><body>{section}</body></html>\n'


def write_outputs(table, values, out_dir: str | os.PathLike, *, title: str) -> dict[str, Path]:
    """Write the table (CSV, parquet), the values, the figure (PNG) and the HTML page; returns the paths."""
    from flowlens.figures.hypotheses import hypothesis_figure
    from flowlens.figures.save import save_figure, write_text
    from flowlens.io.files import atomic_write

    out = Path(out_dir)
    paths = {"csv": out / f"{TABLE_NAME}.csv", "parquet": out / f"{TABLE_NAME}.parquet",
             "values": out / "values.parquet", "png": out / f"{TABLE_NAME}.png", "html": out / f"{TABLE_NAME}.html"}
    with atomic_write(paths["csv"], "w") as f:
        table.to_csv(f, index=False)
    for key, df in (("parquet", table), ("values", values)):
        with atomic_write(paths[key]) as f:
            df.to_parquet(f, index=False)
    save_figure(hypothesis_figure(table, title=title), paths["png"], dpi=110, close=True)
    write_text(paths["html"], _page(html_section(table, title=title, png=paths["png"].read_bytes())))
    return paths


def run_hypothesis_file(path: str | os.PathLike, episodes: Sequence[str], backend, out_dir: str | os.PathLike, *,
                        every: int = 1, frames: Sequence[int] | None = None, seed: int = 0, progress: bool = True,
                        confidence: float = 0.95, n_resamples: int = 9999, chunk_size: int = 32,
                        **open_kwargs) -> dict:
    """Evaluate a hypothesis file over episodes, frame by frame, resumably (see the module docstring).

    Args:
      path: the hypothesis file (executed).
      episodes: ``open_episode`` specs (``flowlens.io.sources.list_episodes`` expands folders).
      backend: a ``flowlens.pipeline`` backend.
      out_dir: the run folder (rerun the same command to resume).
      every, frames: which frames (``flowlens.io.batch.plan_frames``).
      open_kwargs: passed to ``open_episode`` (e.g. prompt).
    Returns:
      dict with ``table``, ``values``, ``paths``, ``computed`` and ``skipped`` frame counts.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from flowlens.io.batch import BatchRun, plan_frames

    text = Path(path).read_bytes() if Path(path).is_file() else b""
    hypotheses = load_hypothesis_file(path)
    specs = plan_frames(episodes, every=every, frames=frames, **open_kwargs)
    if not specs:
        raise FlowlensError("the episodes hold no frames to evaluate; check --frames / --frame-step.")
    fn_name = f"hypothesis-file:{hashlib.sha256(text).hexdigest()[:16]}:seed{seed}"
    with BatchRun(Path(out_dir) / "frames", specs, chunk_size=chunk_size, fn_name=fn_name) as run:
        todo = run.pending()
        skipped = len(specs) - len(todo)
        for spec in tqdm(todo, total=len(specs), initial=skipped, disable=not progress, desc="frames", unit="frame"):
            src = spec.open_episode()
            frame = src.frame(spec.frame)
            labels = {"episode": spec.episode, "frame": spec.frame, "success": src.success, "prompt": frame.prompt}
            ev = Evidence(spec.key, backend, frame=frame, labels=labels, seed=seed)
            run.record(spec, frame_values(hypotheses, ev))
        values = run.finish()
    if not {*VALUE_COLUMNS} <= set(values.columns):
        values = pd.DataFrame(columns=["episode", "frame", *VALUE_COLUMNS])
    table = summarize(values, hypotheses, confidence=confidence, n_resamples=n_resamples, seed=seed)
    paths = write_outputs(table, values, out_dir, title=f"Hypotheses: {Path(path).name}")
    return {"table": table, "values": values, "paths": paths, "computed": len(todo), "skipped": skipped}
