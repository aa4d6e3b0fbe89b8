"""``flowlens hypothesis``: a hypothesis file over success / failure episodes → CSV, parquet, PNG, HTML; resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

HYPOTHESES = '''
import time, os
from flowlens.hypotheses import Hypothesis, mass

def words(ev):
    time.sleep(float(os.environ.get("HYP_SLEEP", "0")))
    return mass(ev.graph(), "actions", "words")

READ = Hypothesis("actions read <words>", words, null=0.1, description="<script>alert(1)</script>")
SUCCESS = Hypothesis("success vs failure", words, by="success")
LAYERS = Hypothesis("base vs bos", lambda ev, L: {"base": mass(ev.graph(), "actions", "base_0_rgb", layers=L),
                    "bos": mass(ev.graph(), "actions", "bos", layers=L)}, compare=("base", "bos"),
                    sweep=[range(0, 9), range(9, 18)])
'''


def write_file(tmp_path, text=HYPOTHESES) -> Path:
    path = tmp_path / "my_hypotheses.py"
    path.write_text(text)
    return path


def test_end_to_end_writes_table_figure_and_escaped_html(tmp_path, outcome_pair, cli, png_ok, leftovers):
    hyp = write_file(tmp_path)
    out = tmp_path / "out"
    code, stdout, err = cli("hypothesis", hyp, "--episode", outcome_pair[0].parent, "--checkpoint", "synthetic",
                            "--frame-step", "4", "--n-resamples", "999", "--output-dir", out, "--no-progress")
    assert code == 0, err
    t = pd.read_csv(out / "hypotheses.csv", keep_default_na=False)
    assert t.hypothesis.tolist() == ["actions read <words>", "success vs failure", "base vs bos", "base vs bos"]
    assert t.sweep.tolist() == ["", "", "0-8", "9-17"]
    row = t[t.hypothesis == "success vs failure"].iloc[0]
    assert (row.a, row.b, row.n_a, row.n_b) == ("success=True", "success=False", 3, 3)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "hypotheses.parquet").fillna(""), t, check_dtype=False)
    values = pd.read_parquet(out / "values.parquet")
    assert len(values[values.hypothesis == "actions read <words>"]) == 6
    png_ok(out / "hypotheses.png")
    page = (out / "hypotheses.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "actions read &lt;words&gt;" in page and "data:image/png;base64," in page
    assert "success vs failure: effect" in stdout and "wrote html" in stdout
    assert leftovers(out) == []


def test_bad_hypothesis_file_is_one_clear_line(tmp_path, outcome_pair, cli):
    bad = write_file(tmp_path, "from flowlens.hypotheses import Hypothesis, mass\n"
                               "H = Hypothesis('wrist', lambda ev: mass(ev.graph(), 'actions', 'wrist'))\n")
    code, _, err = cli("hypothesis", bad, "--episode", outcome_pair[0], "--checkpoint", "synthetic", "--frames", "0", "1",
                       "--output-dir", tmp_path / "o", "--no-progress")
    assert code == 2 and err.count("\n") == 1
    assert "hypothesis 'wrist' on frame" in err and "group='wrist' is not known" in err
    empty = write_file(tmp_path, "x = 1\n")
    code, _, err = cli("hypothesis", empty, "--episode", outcome_pair[0], "--checkpoint", "synthetic",
                       "--output-dir", tmp_path / "o2")
    assert code == 2 and "defines no Hypothesis" in err


def test_resume_after_a_kill_skips_finished_frames(tmp_path, outcome_pair, cli):
    hyp = write_file(tmp_path)
    out = tmp_path / "out"
    args = [str(hyp), "--episode", str(outcome_pair[0].parent), "--checkpoint", "synthetic", "--frame-step", "2",
            "--n-resamples", "999", "--output-dir", str(out), "--no-progress"]
    env = {**os.environ, "HYP_SLEEP": "0.6", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "flowlens", "hypothesis", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parts = out / "frames" / "parts"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and len(list(parts.glob("*.parquet"))) < 2:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(parts.glob("*.parquet")))
    assert 2 <= done < 12 and not (out / "hypotheses.csv").exists()

    code, stdout, err = cli("hypothesis", *args)
    assert code == 0, err
    assert f"{12 - done} frames evaluated ({done} kept from the earlier run)" in stdout
    code, stdout2, err = cli("hypothesis", *args[:-3], "--output-dir", tmp_path / "fresh", "--no-progress")
    assert code == 0, err
    resumed = pd.read_csv(out / "hypotheses.csv")
    pd.testing.assert_frame_equal(resumed, pd.read_csv(tmp_path / "fresh" / "hypotheses.csv"))

    write_file(tmp_path, HYPOTHESES + "\nEXTRA = 1\n")  # an edited file may not resume into the same folder
    code, _, err = cli("hypothesis", *args)
    assert code == 2 and "per-frame function" in err


MODEL_HYPOTHESES = '''
from flowlens.hypotheses import Hypothesis
from flowlens.model.knockout import Knockout

def drop(ev):
    cut = ev.actions([Knockout("base_0_rgb", "words")])
    return float(abs(ev.actions() - cut).sum())

def no_op(ev):  # the prefix never reads the suffix: this knockout changes nothing, bit for bit
    return float(abs(ev.actions() - ev.actions([Knockout("words", "actions")])).max())

DROP = Hypothesis("patches need the words", drop, null=0.0, alternative="greater")
NOOP = Hypothesis("a knockout without mass", no_op, null=0.0)
'''


@pytest.mark.slow
def test_interventions_through_the_embedded_model(tmp_path, outcome_pair, cli):
    hyp = write_file(tmp_path, MODEL_HYPOTHESES)
    out = tmp_path / "out"
    code, stdout, err = cli("hypothesis", hyp, "--episode", *outcome_pair, "--checkpoint", "builtin:tabletop",
                            "--frames", "0", "5", "--n-resamples", "999", "--output-dir", out, "--no-progress")
    assert code == 0, err
    t = pd.read_csv(out / "hypotheses.csv")
    noop = t[t.hypothesis == "a knockout without mass"].iloc[0]
    assert (noop.mean_a, noop.effect, noop.ci_low, noop.ci_high) == (0.0, 0.0, 0.0, 0.0)
    assert t[t.hypothesis == "patches need the words"].iloc[0].mean_a > 0
