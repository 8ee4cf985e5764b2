"""Run the book's notebooks at a budget and print their claims, time and peak memory.

    python benchmarks/run_notebooks.py                 # every notebook, full budget
    python benchmarks/run_notebooks.py --budget test book/00_start/first_model.ipynb

Each notebook runs in a fresh kernel in its own process (so that its peak
memory is its own), headless, in its own folder, in the order of the table of
contents, with a fresh zoo cache shared by the run (``--warm-cache`` keeps
``FMBOOK_CACHE``). The table lists, per claim,
the bound for the budget, the measured value and whether it holds; then the
notebook's wall time and the kernel's peak resident memory.

Last comes the time table: each notebook's wall time against its target (at the full budget
at most 180 s with the zoo's models already cached, ``--warm-cache``, and 240 s with an empty
cache, the default, where the first notebook that needs a model trains it) and the whole
book's against 18 minutes. ``--record benchmarks/notebook_times.csv`` keeps the times in that
file, one row per notebook, budget, device and cache, replacing the rows of an earlier run
with the same ones (so the file holds the CPU and, where one was measured, the CUDA times).

Results (``kind = "result"``) must hold their bounds. Measurements of the machine
(``kind = "machine"``) are printed beside their reference value and checked against
their targets: on the reference machine (2 CPU cores) a missed target is a failure;
elsewhere pass ``--targets report`` to list misses without failing.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOTEBOOK_TARGET_S = {"warm": 180.0, "cold": 240.0}  # at the full budget, per notebook
BOOK_TARGET_S = 18 * 60.0  # the whole book at the full budget
TIME_COLUMNS = ("notebook", "budget", "device", "cache", "seconds", "peak_mib", "date", "machine")


def execute_one(notebook: Path, timeout: int) -> dict:
    """Execute one notebook in a fresh kernel; return wall time and the kernel's peak RSS."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(notebook.parent)}},
    )
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except Exception as err:  # report, do not hide: the table shows it
        error = (
            f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
        )
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": seconds, "peak_mib": peak_kib / 1024, "error": error}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--budget", default="full", choices=["test", "full"])
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    parser.add_argument(
        "--warm-cache",
        action="store_true",
        help="use FMBOOK_CACHE as it is instead of a fresh, empty one",
    )
    parser.add_argument(
        "--targets",
        choices=["check", "report"],
        default="check",
        help="machine measurements that miss their target: fail (check, on the reference machine) "
        "or only list them (report, any other machine)",
    )
    parser.add_argument(
        "--claims-dir",
        type=Path,
        help="where the notebooks write their claims (default: a fresh temporary folder); "
        "benchmarks/update_references.py reads them from there",
    )
    parser.add_argument(
        "--record",
        type=Path,
        help="a CSV file (e.g. benchmarks/notebook_times.csv) in which to keep the notebook times",
    )
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        print(json.dumps(execute_one(args.notebooks[0].resolve(), args.timeout)))
        return 0

    from fmbook.claims import load_specs
    from scripts.book_config import notebooks_in_reading_order

    chosen = [p.resolve() for p in args.notebooks] or notebooks_in_reading_order()
    claims_dir = args.claims_dir or Path(tempfile.mkdtemp(prefix="fmbook-claims-"))
    claims_dir.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        FMBOOK_BUDGET=args.budget,
        FMBOOK_HEADLESS="1",
        FMBOOK_CLAIMS_DIR=str(claims_dir),
        FMBOOK_CLAIMS="strict",
    )
    if (
        not args.warm_cache
    ):  # like a first reader: zoo models are trained by the notebooks that need them
        env["FMBOOK_CACHE"] = tempfile.mkdtemp(prefix="fmbook-cache-")
    env.pop("MPLBACKEND", None)  # let the kernel use the inline backend, so figures are images
    failures = misses = 0
    rows, times = [], {}
    for nb in chosen:
        out = subprocess.run(
            [sys.executable, __file__, "--one", "--timeout", str(args.timeout), str(nb)],
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode:
            print(out.stderr, file=sys.stderr)
            return out.returncode
        run = json.loads(out.stdout.strip().splitlines()[-1])
        name = nb.stem
        specs_file = nb.with_name(f"{name}.claims.toml")
        specs = load_specs(specs_file, args.budget) if specs_file.exists() else {}
        record_file = claims_dir / f"{name}.{args.budget}.json"
        measured = json.loads(record_file.read_text())["claims"] if record_file.exists() else {}
        print(
            f"\n{nb.relative_to(ROOT)}  budget={args.budget}  time={run['seconds']:.1f} s  "
            f"peak memory={run['peak_mib']:.0f} MiB"
            + (f"  ERROR {run['error']}" if run["error"] else "")
        )
        failures += bool(run["error"])
        times[nb] = run
        print(
            f"  {'claim':<26} {'kind':<8} {'bound / target':<20} "
            f"{'reference':>10} {'measured':>12}  unit"
        )
        quoted = {c for c, entry in measured.items() if entry.get("kind") == "constant"}
        for claim in sorted(set(specs) | set(measured) - quoted):
            spec = specs.get(claim)
            value = measured.get(claim, {}).get("value")
            text = spec.bound_text() if spec and spec.bounds else "(none)"
            kind = spec.kind if spec else "?"
            ok = value is not None and spec is not None and spec.holds(value)
            if kind == "machine":
                verdict = "ok" if ok else "MISS"
                misses += not ok and bool(spec.bounds)
                ok = value is not None
            else:
                verdict = "ok" if ok else "FAIL"
            failures += not ok
            reference = f"{spec.reference:.4g}" if spec and spec.reference is not None else ""
            shown = f"{value:.4g}" if value is not None else "missing"
            unit = measured.get(claim, {}).get("unit", "")
            print(
                f"  {claim:<26} {kind:<8} {text:<20} "
                f"{reference:>10} {shown:>12}  {unit:<12} {verdict}"
            )
            rows.append((name, claim, value, ok))
    misses += time_table(times, args.budget, "warm" if args.warm_cache else "cold", args.record)
    print(
        f"\n{len(chosen)} notebooks, {len(rows)} claims, {failures} failures, "
        f"{misses} machine targets missed"
        + (" (reported only)" if args.targets == "report" else "")
    )
    return 1 if failures or (misses and args.targets == "check") else 0


def cpu_model() -> str:
    """The CPU's model name, from ``/proc/cpuinfo`` where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_table(times: dict[Path, dict], budget: str, cache: str, record: Path | None) -> int:
    """Print each notebook's time against its target; keep the times in ``record``; return the
    number of targets missed (targets apply at the full budget only)."""
    from fmbook.runtime import device

    target = NOTEBOOK_TARGET_S[cache] if budget == "full" else None
    where = device(os.environ.get("FMBOOK_DEVICE") or None).type
    print(f"\nTime per notebook ({budget} budget, {where}, {cache} model cache)")
    print(f"  {'notebook':<40} {'seconds':>8} {'target':>8}  peak MiB")
    missed = 0
    for nb, run in times.items():
        ok = target is None or run["seconds"] <= target
        missed += not ok
        shown = f"{target:.0f}" if target else "-"
        print(
            f"  {str(nb.relative_to(ROOT / 'book')):<40} {run['seconds']:8.1f} {shown:>8}  "
            f"{run['peak_mib']:8.0f}  {'ok' if ok else 'MISS'}"
        )
    total = sum(run["seconds"] for run in times.values())
    book_ok = budget != "full" or len(times) < 2 or total <= BOOK_TARGET_S
    missed += not book_ok
    print(
        f"  {'all':<40} {total:8.1f} "
        f"{(f'{BOOK_TARGET_S:.0f}' if budget == 'full' else '-'):>8}  "
        f"{'' if len(times) < 2 else ('ok' if book_ok else 'MISS')}"
    )
    if record is not None:
        keep = []
        if record.exists():
            with record.open(newline="") as f:
                keep = list(csv.DictReader(f))
        names = {str(nb.relative_to(ROOT / "book")) for nb in times}
        keep = [
            r
            for r in keep
            if not (
                r["notebook"] in names
                and (r["budget"], r["device"], r["cache"]) == (budget, where, cache)
            )
        ]
        today = datetime.date.today().isoformat()
        machine = f"{cpu_model()}, {os.cpu_count()} CPUs"
        for nb, run in times.items():
            keep.append(
                {
                    "notebook": str(nb.relative_to(ROOT / "book")),
                    "budget": budget,
                    "device": where,
                    "cache": cache,
                    "seconds": f"{run['seconds']:.1f}",
                    "peak_mib": f"{run['peak_mib']:.0f}",
                    "date": today,
                    "machine": machine,
                }
            )
        with record.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=TIME_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(keep)
        print(f"  kept in {record}")
    return missed


if __name__ == "__main__":
    raise SystemExit(main())
