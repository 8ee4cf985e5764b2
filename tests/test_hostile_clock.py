"""The book's results do not depend on the machine's speed.

The notebooks run under nbval on a hostile clock (``tests/hostile_clock/sitecustomize.py``,
switched on in ``conftest.py``): every clock they read runs 3x fast and is read 1 s late, as
on a machine 3x slower with noisy timing. These tests check that the clock does what it says,
that a notebook which gates on a wall time or a speed ratio fails under it, and that the
book's thresholds files declare every time and speed as a measurement of the machine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import nbformat
import pytest

from scripts.book_config import ROOT, notebooks

CLOCK_DIR = ROOT / "tests" / "hostile_clock"


def hostile_env(everywhere: bool = False) -> dict:
    """The environment of a process on the hostile clock: every Python process, or kernels only."""
    env = dict(os.environ, FMBOOK_TEST_CLOCK="hostile-all" if everywhere else "hostile")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CLOCK_DIR), str(ROOT)) if p)
    return env


def real_env() -> dict:
    return dict(os.environ, FMBOOK_TEST_CLOCK="real")


def run_python(code: str, env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_the_hostile_clock_is_three_times_slow_and_late_on_every_read():
    code = textwrap.dedent(
        """
        import json, time
        t0, m0 = time.perf_counter(), time.monotonic()
        time.sleep(0.2)
        t1, m1 = time.perf_counter(), time.monotonic()
        a = time.process_time_ns(); b = time.process_time_ns()
        print(json.dumps({"slept": t1 - t0, "monotonic": m1 - m0, "ns": b - a,
                          "wall": time.time() - time.time(),
                          "flag": list(time.fmbook_hostile_clock)}))
        """
    )
    got = run_python(code, hostile_env(everywhere=True))
    assert (
        run_python(code.replace("list(time.fmbook_hostile_clock)", "None"), hostile_env())["slept"]
        < 0.5
    )
    assert got["flag"] == [3.0, 1.0]
    assert (
        3 * 0.2 + 1.0 <= got["slept"] < 3 * 0.2 + 1.0 + 1.0
    )  # 3x the real 0.2 s, plus one late read
    assert 0.19 <= got["monotonic"] < 0.5  # left alone: the kernel's event loop waits on it
    assert got["ns"] >= 10**9  # the _ns twins are hostile too
    assert got["wall"] < 0  # time.time() read later is larger: the clock stays monotone
    real = run_python(code.replace("list(time.fmbook_hostile_clock)", "None"), real_env())
    assert 0.19 <= real["slept"] < 0.5, (
        "without FMBOOK_TEST_CLOCK=hostile the clock is the real one"
    )


def test_the_hostile_clock_squashes_speed_ratios():
    code = textwrap.dedent(
        """
        import json, time
        def timed(n):
            start = time.perf_counter(); sum(range(n)); return time.perf_counter() - start
        print(json.dumps({"ratio": timed(2_000_000) / timed(200_000)}))
        """
    )
    assert run_python(code, real_env())["ratio"] > 5  # ten times the work
    assert run_python(code, hostile_env(everywhere=True))["ratio"] < 2  # less than half of it


TIMED = """\
import time
from fmbook import claims
claims.notebook("timed")
def timed(n):
    start = time.perf_counter(); sum(range(n)); return time.perf_counter() - start
fast, slow = timed(100_000), timed(400_000)
claims.{verb}("seconds", slow, "s")
claims.{verb}("speedup", slow / fast, "x")
claims.check()
"""


def run_nbval(tmp_path: Path, kind: str, env: dict) -> subprocess.CompletedProcess:
    verb = "record" if kind == "result" else "measure"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(TIMED.format(verb=verb))]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, tmp_path / "timed.ipynb")
    bounds = "min = 0" if kind == "result" else "reference = 1"
    (tmp_path / "timed.claims.toml").write_text(
        f'[seconds]\nkind = "{kind}"\n'
        f"test = {{ {bounds}, max = 0.9 }}\nfull = {{ {bounds}, max = 0.9 }}\n"
        f'[speedup]\nkind = "{kind}"\n'
        f"test = {{ {bounds.replace('min = 0', 'max = 1e9')}, min = 2 }}\n"
        f"full = {{ {bounds.replace('min = 0', 'max = 1e9')}, min = 2 }}\n"
    )
    env = dict(env, FMBOOK_BUDGET="test", FMBOOK_CLAIMS_DIR=str(tmp_path / "claims"))
    env.pop("MPLBACKEND", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "-q",
            "--nbval-lax",
            "--nbval-current-env",
            "timed.ipynb",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_notebook_that_gates_on_time_passes_on_a_real_clock_and_fails_on_the_hostile_one(
    tmp_path,
):
    real = dict(os.environ, FMBOOK_TEST_CLOCK="real", PYTHONPATH=str(ROOT))
    ok = run_nbval(tmp_path, "result", real)
    assert ok.returncode == 0, ok.stdout[-2000:]
    failed = run_nbval(tmp_path, "result", hostile_env())
    assert failed.returncode != 0
    assert "FAIL seconds" in failed.stdout and "FAIL speedup" in failed.stdout, failed.stdout[
        -3000:
    ]


def test_the_same_numbers_as_measurements_pass_on_the_hostile_clock(tmp_path):
    out = run_nbval(tmp_path, "machine", hostile_env())
    assert out.returncode == 0, out.stdout[-3000:]


TIMING_NAME = re.compile(
    r"seconds|speedup|speed_|time_ratio|throughput|per_second|memory|_mib|latency"
)


@pytest.mark.parametrize("notebook", notebooks(), ids=lambda p: p.stem)
def test_every_time_and_speed_is_declared_a_measurement_of_the_machine(notebook):
    table = tomllib.loads(
        notebook.with_name(f"{notebook.stem}.claims.toml").read_text(encoding="utf-8")
    )
    timing = {name for name in table if TIMING_NAME.search(name)}
    wrong = sorted(name for name in timing if table[name].get("kind") != "machine")
    assert not wrong, f'{notebook.stem}: times and speeds must be kind = "machine": {wrong}'


def test_no_book_code_reads_the_clock_the_test_cannot_make_hostile():
    sources = [(p, p.read_text(encoding="utf-8")) for p in (ROOT / "fmbook").glob("*.py")]
    for nb in notebooks():
        cells = nbformat.read(nb, as_version=4).cells
        sources.append((nb, "\n".join(c.source for c in cells if c.cell_type == "code")))
    readers = [str(p.relative_to(ROOT)) for p, text in sources if re.search(r"\bmonotonic\b", text)]
    assert not readers, (
        f"time.monotonic is not made hostile in the tests; use time.perf_counter: {readers}"
    )
