"""The faithfulness benchmark's --smoke run: every method scored, the ranking table printed."""

import importlib.util
import pathlib

import pytest

BENCH = pathlib.Path(__file__).parents[2] / "benchmarks" / "bench_faithfulness.py"


@pytest.mark.slow
def test_smoke_prints_the_ranking_table(capsys):
    spec = importlib.util.spec_from_file_location("bench_faithfulness", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    records = bench.main(["--smoke"])
    text = capsys.readouterr().out
    methods = [r["method"] for r in records if "method" in r]
    assert {"raw", "rollout", "relevancy", "ig", "random"} <= set(methods)
    assert "| rank | method | deletion AOPC chunk |" in text
    for r in records:
        if "method" in r:
            mean, low, high = r["del_chunk"]
            assert low <= mean <= high  # a bootstrap CI around the mean
            assert 0.0 <= r["pointing"][0] <= 1.0 and r["cost_vs_sample"] >= 0.0
    summary = records[-1]
    assert summary["summary"] == "faithfulness" and summary["frames"] == 3
    assert summary["plain_sample_seconds"] > 0
