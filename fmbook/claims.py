"""Measured claims: every number the book states, recorded and checked.

There are two kinds of claim, and the kind is explicit both in the notebook and
in the thresholds file:

* a **result** -- what a model learned or what the math says (a loss, an
  accuracy, a distance, an ordering, an equality). Results do not depend on the
  machine's speed; each has a bound per budget and a value out of bounds fails
  the notebook (and so nbval and the book build)::

      claims.record("val_loss", val_loss, "nats/char")

* a **measurement of the machine** -- a wall time, a speed-up, a throughput, a
  memory size. It is recorded, glued and shown beside its value on the
  reference machine, and never fails a notebook: a reader's laptop, a shared
  Binder CPU and a GPU all differ. ``benchmarks/run_notebooks.py`` checks it
  against its target on the reference machine::

      claims.measure("train_seconds", history.seconds, "s")

A number the book only **quotes** -- a configuration constant such as the
number of training steps, or a count fixed by the code -- is glued without a
bound, since a bound that pins a constant to itself cannot fail::

    claims.quote("steps", config["steps"], "steps")

A quoted name must not also have an entry in the thresholds file.

A notebook names itself once, records its claims where it computes them, and
checks them at the end::

    claims = fmbook.claims.notebook("first_model")
    ...
    claims.check()

Records go to ``<FMBOOK_CLAIMS_DIR>/<notebook>.<budget>.json`` (default: the
``claims`` folder of the cache). The thresholds live beside the notebook, in
``<notebook>.claims.toml``, one table per claim::

    [val_loss]
    kind = "result"
    description = "validation loss of the first model"
    test = { max = 3.2 }
    full = { max = 2.1 }

    [train_seconds]
    kind = "machine"
    description = "wall time of training"
    test = { reference = 19.2 }
    full = { reference = 61.9, max = 90 }

For a result, ``min``/``max`` are the bounds that gate. For a measurement,
``reference`` is the value measured on the reference machine (written by
``benchmarks/update_references.py`` from a run there, never typed by hand), and
an optional ``min``/``max`` is the benchmark's target on that machine.

``check`` fails if a recorded claim has no entry, an entry was never measured,
a claim was recorded with the other kind than its entry says, or a result is
out of bounds -- when the check is strict: under the book's build and its test suite, which set
``FMBOOK_CLAIMS=strict``. A reader who runs a notebook by hand, perhaps after changing a setting as
an exercise suggests, gets a table instead of an exception: every result that moved outside the
book's range, "your run: 1.93, the book's range 1.60 to 1.80". Inside Jupyter Book, each value is
also glued (myst-nb) under its name, and a measurement's reference value under
``<name>_reference``, so the
prose cites them as ``{glue:text}`val_loss:.2f``` and never types a number.
"""

from __future__ import annotations

import html
import json
import math
import os
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from fmbook import budget
from fmbook.runtime import device, in_notebook, write_atomic
from fmbook.zoo import cache_dir

CLAIMS_DIR_ENV = "FMBOOK_CLAIMS_DIR"
STRICT_ENV = "FMBOOK_CLAIMS"  # "strict" under scripts/test, scripts/build-book and CI
BOUNDS = ("min", "max")
KINDS = ("result", "machine")
QUOTED = "constant"
REFERENCE_MACHINE = "2 CPU cores, PyTorch's CPU build"


def strict() -> bool:
    """Whether a result out of its bounds fails the notebook: under the book's build and test
    suite (``FMBOOK_CLAIMS=strict``). Otherwise -- a reader's own run -- ``check`` shows the
    results that moved outside the book's range and raises nothing."""
    return os.environ.get(STRICT_ENV, "").strip().lower() == "strict"


def claims_dir() -> Path:
    root = os.environ.get(CLAIMS_DIR_ENV)
    if root:
        return Path(root).expanduser()
    return cache_dir() / "claims"


@dataclass(frozen=True)
class Spec:
    """The entry of one claim for one budget: its kind, bounds (or targets) and reference value."""

    kind: str
    bounds: dict
    reference: float | None = None
    description: str = ""

    def holds(self, value: float) -> bool:
        return self.bounds.get("min", -math.inf) <= value <= self.bounds.get("max", math.inf)

    def bound_text(self) -> str:
        return " and ".join(f"{'>=' if k == 'min' else '<='} {v:g}" for k, v in self.bounds.items())

    def range_text(self) -> str:
        """The bounds in words: "1.6 to 1.8", "at most 1.8", "at least 1.6"."""
        low, high = self.bounds.get("min"), self.bounds.get("max")
        if low is not None and high is not None:
            return f"{low:.4g} to {high:.4g}"
        return f"at most {high:.4g}" if high is not None else f"at least {low:.4g}"


@dataclass(frozen=True)
class Result:
    name: str
    value: float
    unit: str
    bounds: dict
    ok: bool
    kind: str = "result"
    reference: float | None = None

    def describe(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.kind == "machine":
            ref = "not measured" if self.reference is None else f"{self.reference:.4g}{unit}"
            target = ""
            if self.bounds:
                bound = " and ".join(
                    f"{'>=' if k == 'min' else '<='} {v:g}" for k, v in self.bounds.items()
                )
                target = f"; its target there {bound}"
            return (
                f"info {self.name} = {self.value:.4g}{unit} here (reference machine: {ref}{target})"
            )
        bound = " and ".join(
            f"{'>=' if k == 'min' else '<='} {v:g}" for k, v in self.bounds.items()
        )
        return (
            f"{'ok  ' if self.ok else 'FAIL'} {self.name} = {self.value:.4g}{unit} (needs {bound})"
        )


_PROVIDED: dict[str, str] = {}  # notebook name -> the text of its thresholds file


def provide(name: str, toml_text: str) -> None:
    """Give the thresholds of notebook ``name`` as text, for a notebook that runs away from its
    ``.claims.toml`` (a reader copy opened on Colab): used when no such file is found."""
    try:
        tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(
            f"claims.provide: the thresholds of {name!r} are not TOML ({err})"
        ) from None
    _PROVIDED[name] = toml_text


_BOOKS_RUN: dict[tuple[str, str], dict[str, float]] = {}  # (notebook, budget) -> its values


def provide_measured(name: str, budget_name: str, values: dict[str, float]) -> None:
    """Give the values that notebook ``name`` recorded in the book's own run at ``budget_name``,
    for a notebook that reads them (:func:`measured`) where ``name`` is neither recorded nor
    beside it to be run (a reader copy opened alone on Colab)."""
    if budget_name not in budget.BUDGETS:
        raise ValueError(
            f"claims.provide_measured: budget must be one of {budget.BUDGETS}, got {budget_name!r}"
        )
    _BOOKS_RUN[(name, budget_name)] = {k: float(v) for k, v in values.items()}


def load_specs(file: Path, budget_name: str) -> dict[str, Spec]:
    """The entry for ``budget_name`` of every claim in a ``.claims.toml`` file (or, when there
    is none, in the thresholds :func:`provide` was given for that notebook)."""
    file = Path(file)
    stem = file.name.removesuffix(".claims.toml")
    try:
        if not file.exists() and stem in _PROVIDED:
            table = tomllib.loads(_PROVIDED[stem])
        else:
            table = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"claims: no thresholds file {file}") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"claims: {file} is not valid TOML ({err})") from None
    out = {}
    for name, spec in table.items():
        if not isinstance(spec, dict):
            raise ValueError(f"claims: {file}: [{name}] must be a table, got {spec!r}")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise ValueError(
                f'claims: {file}: [{name}] needs kind = "result" or "machine", got {kind!r}'
            )
        if budget_name not in spec:
            raise ValueError(f"claims: {file}: [{name}] has no entry for budget {budget_name!r}")
        entry = spec[budget_name]
        allowed = set(BOUNDS) | ({"reference"} if kind == "machine" else set())
        if not isinstance(entry, dict) or set(entry) - allowed or (kind == "result" and not entry):
            want = (
                "'min' and/or 'max'" if kind == "result" else "'reference' and optional 'min'/'max'"
            )
            raise ValueError(
                f"claims: {file}: [{name}].{budget_name} ({kind}) must be a table with {want}, "
                f"got {entry!r}"
            )
        reference = entry.get("reference")
        out[name] = Spec(
            kind=kind,
            bounds={k: float(entry[k]) for k in BOUNDS if k in entry},
            reference=None if reference is None else float(reference),
            description=str(spec.get("description", "")),
        )
    return out


def load_thresholds(file: Path, budget_name: str) -> dict[str, dict]:
    """The bounds (results) or targets (measurements) for ``budget_name`` of every claim in
    ``file``."""
    return {name: spec.bounds for name, spec in load_specs(file, budget_name).items()}


def peak_memory_mib() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss``: KiB on Linux, bytes
    on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class Notebook:
    """The claims of one notebook: record values, write them to JSON, check them."""

    def __init__(self, name: str, folder: str | Path | None = None):
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"claims.notebook: name must be a plain file stem, got {name!r}")
        self.name = name
        self.folder = Path(folder) if folder is not None else Path.cwd()
        self.budget = budget.name()
        self.values: dict[str, dict] = {}
        self.extra: dict[str, float] = {}
        self._specs: dict[str, Spec] | None = None

    @property
    def thresholds_file(self) -> Path:
        return self.folder / f"{self.name}.claims.toml"

    @property
    def output_file(self) -> Path:
        return claims_dir() / f"{self.name}.{self.budget}.json"

    def specs(self) -> dict[str, Spec]:
        """The thresholds file's entries for this budget, read once per notebook."""
        if self._specs is None:
            self._specs = load_specs(self.thresholds_file, self.budget)
        return self._specs

    def record(self, name: str, value: float, unit: str = "") -> float:
        """Record result ``name`` (what a model learned or the math says): ``value`` in ``unit``.

        Its bound in the thresholds file gates :meth:`check`.
        """
        return self._add(name, value, unit, "result")

    def measure(self, name: str, value: float, unit: str = "") -> float:
        """Record a measurement of the machine (a time, a speed-up, a memory size): ``value`` in
        ``unit``.

        It is glued with its value on the reference machine (``<name>_reference``) and
        never fails :meth:`check`.
        """
        number = self._add(name, value, unit, "machine")
        spec = self.specs().get(name)
        if spec is not None and spec.reference is not None:
            _glue(f"{name}_reference", spec.reference)
        return number

    def quote(self, name: str, value: float, unit: str = "") -> float:
        """Glue a constant the prose quotes (a configuration value, a count fixed by the code).

        It is kept in the record but has no bound: it must not have an entry in the
        thresholds file.
        """
        return self._add(name, value, unit, QUOTED)

    def record_many(self, values: dict[str, float], unit: str = "") -> dict[str, float]:
        """Record several results at once, ``{name: value}``, all in ``unit``."""
        return {name: self.record(name, value, unit) for name, value in values.items()}

    def quote_many(self, values: dict[str, float], unit: str = "") -> dict[str, float]:
        """Quote several constants at once, ``{name: value}``, all in ``unit``."""
        return {name: self.quote(name, value, unit) for name, value in values.items()}

    def _add(self, name: str, value: float, unit: str, kind: str) -> float:
        verb = {"result": "record", "machine": "measure", QUOTED: "quote"}[kind]
        if not isinstance(name, str) or not name.replace("_", "").isalnum():
            raise ValueError(f"claims.{verb}: name must be letters, digits and '_', got {name!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"claims.{verb}({name!r}): value must be a number, got {value!r}"
            ) from None
        if not math.isfinite(number):
            raise ValueError(f"claims.{verb}({name!r}): value must be finite, got {number}")
        self.values[name] = {"value": number, "unit": unit, "kind": kind, "time": time.time()}
        self._write()
        _glue(name, number)
        return number

    def _write(self) -> None:
        out = self.output_file
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "notebook": self.name,
            "budget": self.budget,
            "device": str(device()),
            "claims": self.values,
            **self.extra,
        }
        write_atomic(out, json.dumps(doc, indent=2, sort_keys=True).encode("utf-8"))

    def check(self, raise_on_failure: bool | None = None) -> list[Result]:
        """Check every result against its bound; show every measurement beside its reference value.

        ``raise_on_failure`` (default: :func:`strict`) raises ``AssertionError`` when a result is
        out of bounds or the record does not match the thresholds file; otherwise the results
        that moved are shown beside the book's range. Also writes this process's peak memory
        (MiB) to the record, for the benchmarks.
        """
        self.extra["peak_memory_mib"] = round(peak_memory_mib(), 1)
        self._write()
        if raise_on_failure is None:
            raise_on_failure = strict()
        return check_values(
            {k: v["value"] for k, v in self.values.items()},
            self.specs(),
            units={k: v["unit"] for k, v in self.values.items()},
            kinds={k: v["kind"] for k, v in self.values.items()},
            quoted={k for k, v in self.values.items() if v["kind"] == QUOTED},
            where=f"{self.name} at budget {self.budget!r}",
            raise_on_failure=raise_on_failure,
        )


def check_values(
    values: dict[str, float],
    specs: dict[str, Spec],
    *,
    units: dict[str, str] | None = None,
    kinds: dict[str, str] | None = None,
    quoted: set[str] | frozenset[str] = frozenset(),
    where: str = "",
    raise_on_failure: bool = True,
) -> list[Result]:
    """Check measured ``values`` against their ``specs``; print a line per claim and a summary.

    Results out of bounds fail; measurements of the machine are shown, never failed.
    ``kinds`` (how each value was recorded) must agree with the specs. ``quoted`` names
    constants glued without a bound: they must have no spec.
    """
    units = units or {}
    kinds = kinds or {}
    problems = []
    bounded_quotes = sorted(set(quoted) & set(specs))
    if bounded_quotes:
        problems.append(
            "quoted constants must not have an entry in the thresholds file: "
            f"{', '.join(bounded_quotes)}"
        )
    values = {k: v for k, v in values.items() if k not in quoted}
    unmeasured = sorted(set(specs) - set(values))
    unbounded = sorted(set(values) - set(specs))
    if unmeasured:
        problems.append(f"entries never measured: {', '.join(unmeasured)}")
    if unbounded:
        problems.append(f"claims without an entry in the thresholds file: {', '.join(unbounded)}")
    for name in sorted(set(values) & set(specs)):
        recorded, declared = kinds.get(name, "result"), specs[name].kind
        if recorded != declared:
            how = "claims.record" if recorded == "result" else "claims.measure"
            problems.append(
                f"{name} was recorded with {how} but its entry says kind = {declared!r}"
            )
        if declared == "machine" and specs[name].reference is None:
            problems.append(
                f"{name} has no reference value "
                "(run benchmarks/update_references.py on the reference machine)"
            )
    results = []
    for name in sorted(set(values) & set(specs)):
        spec, value = specs[name], values[name]
        ok = spec.holds(value) if spec.kind == "result" else True
        results.append(
            Result(name, value, units.get(name, ""), spec.bounds, ok, spec.kind, spec.reference)
        )
    lines = [r.describe() for r in sorted(results, key=lambda r: r.kind != "result")]
    n_results = sum(r.kind == "result" for r in results)
    failed = [r for r in results if not r.ok]
    n_machine = len(results) - n_results
    if (failed or problems) and raise_on_failure:
        summary = (
            f"{n_results - len(failed)} of {n_results} results hold; {n_machine} "
            f"{'measurement' if n_machine == 1 else 'measurements'} of this machine shown beside "
            f"the reference machine ({REFERENCE_MACHINE})"
            + (f"; {len(problems)} problems" if problems else "")
        )
        _show(lines, summary, [r.describe() for r in failed] + problems)
        raise AssertionError(
            f"claims of {where} failed:\n  "
            + "\n  ".join([r.describe() for r in failed] + problems)
        )
    if failed or problems:
        moved = [(r.name, _number(r.value, r.unit), specs[r.name].range_text()) for r in failed]
        summary = (
            f"Your run differs from the book's: {len(failed)} of {n_results} results moved "
            "outside the range the book's runs give. That is what a changed setting, another "
            "seed or another budget does; the table shows by how much."
            if failed
            else f"All {n_results} results of your run are in the book's range."
        )
        _show_moved(lines, summary, moved, problems)
    else:
        _show(
            lines,
            f"{n_results} of {n_results} results hold; {n_machine} "
            f"{'measurement' if n_machine == 1 else 'measurements'} of this machine shown beside "
            f"the reference machine ({REFERENCE_MACHINE})",
            [],
        )
    return results


def _number(value: float, unit: str) -> str:
    return f"{value:.4g}" + (f" {unit}" if unit else "")


def _folded(lines: list[str]) -> str:
    """Every claim line, folded away under a summary that counts them."""
    return (
        f"<details><summary>every claim of this page ({len(lines)})</summary><pre>"
        + html.escape("\n".join(lines))
        + "</pre></details>"
    )


def _show(lines: list[str], summary: str, problems: list[str]) -> None:
    """Print the claim lines and the summary; in Jupyter, the summary with the lines folded away."""
    if not in_notebook():
        print("\n".join([*lines, summary]))
        return
    from IPython.display import HTML, display

    shown = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
    display(
        HTML(
            f"<p><b>Claims.</b> {html.escape(summary)}</p>"
            + (f"<ul>{shown}</ul>" if shown else "")
            + _folded(lines)
        )
    )


def _show_moved(
    lines: list[str], summary: str, moved: list[tuple[str, str, str]], notes: list[str]
) -> None:
    """A reader's run: the results outside the book's range as a table, and notes (claims the
    run did not reach, say); raises nothing."""
    notes = [f"note: {n}" for n in notes]
    if not in_notebook():
        table = [f"{name}: your run {value}, the book's range {rng}" for name, value, rng in moved]
        print("\n".join([summary, *table, *notes]))
        return
    from IPython.display import HTML, display

    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{html.escape(v)}</td><td>{html.escape(r)}</td></tr>"
        for n, v, r in moved
    )
    table = (
        f"<table><tr><th>result</th><th>your run</th><th>the book's range</th></tr>{rows}</table>"
        if moved
        else ""
    )
    display(
        HTML(
            f"<p><b>Your run.</b> {html.escape(summary)}</p>{table}"
            + "".join(f"<p>{html.escape(n)}</p>" for n in notes)
            + _folded(lines)
        )
    )


_current: Notebook | None = None


def notebook(name: str, folder: str | Path | None = None) -> Notebook:
    """Start recording the claims of notebook ``name`` (thresholds in ``folder``, default cwd)."""
    global _current
    _current = Notebook(name, folder)
    return _current


def _require_current() -> Notebook:
    if _current is None:
        raise RuntimeError("claims: call fmbook.claims.notebook('<name>') first")
    return _current


def record(name: str, value: float, unit: str = "") -> float:
    """Record a result of the current notebook (see :func:`notebook`)."""
    return _require_current().record(name, value, unit)


def measure(name: str, value: float, unit: str = "") -> float:
    """Record a measurement of the machine for the current notebook (see :func:`notebook`)."""
    return _require_current().measure(name, value, unit)


def quote(name: str, value: float, unit: str = "") -> float:
    """Glue a constant that the current notebook's prose quotes, without a bound."""
    return _require_current().quote(name, value, unit)


def record_many(values: dict[str, float], unit: str = "") -> dict[str, float]:
    """Record several results of the current notebook at once:
    ``record_many({"a": 1.0, "b": 2.0})``."""
    return _require_current().record_many(values, unit)


def quote_many(values: dict[str, float], unit: str = "") -> dict[str, float]:
    """Quote several constants of the current notebook at once, without bounds."""
    return _require_current().quote_many(values, unit)


def spec(notebook_name: str, claim: str, folder: str | Path | None = None) -> Spec:
    """The entry of ``claim`` in notebook ``notebook_name``'s thresholds file, at the current
    budget.

    A notebook that re-quotes another notebook's bound reads it here instead of copying it.
    """
    folder = Path(folder) if folder is not None else Path.cwd()
    specs = load_specs(folder / f"{notebook_name}.claims.toml", budget.name())
    if claim not in specs:
        raise KeyError(
            f"claims.spec: {notebook_name} has no claim {claim!r}; "
            f"it has {', '.join(sorted(specs))}"
        )
    return specs[claim]


def check(raise_on_failure: bool | None = None) -> list[Result]:
    """Check the claims of the current notebook (strict under the book's build and tests)."""
    return _require_current().check(raise_on_failure)


def _glue(name: str, value: float) -> None:
    if not in_notebook():
        return
    try:
        from myst_nb import glue
    except ImportError:  # Colab or plain Jupyter: nothing to glue into
        return
    glue(name, value, display=False)


def measured(
    name: str, folder: str | Path | None = None, run_missing: bool = True, timeout: int = 1800
) -> dict:
    """The values that notebook ``name`` recorded at the current budget, from its last run.

    If it has not run at this budget yet and ``run_missing`` is true, ``folder/name.ipynb``
    (default folder: the current directory) is executed first, headless, in its own folder.
    """
    file = claims_dir() / f"{name}.{budget.name()}.json"
    if not file.exists() and run_missing:
        import nbformat
        from nbclient import NotebookClient

        folder = Path(folder) if folder is not None else Path.cwd()
        path = folder / f"{name}.ipynb"
        if not path.exists() and (name, budget.name()) in _BOOKS_RUN:
            print(
                f"claims.measured: {name} has not run here at budget {budget.name()!r}, and it "
                f"is not beside this notebook; using the book's own run of it (run {name} first "
                "to compare with yours)"
            )
            return dict(_BOOKS_RUN[(name, budget.name())])
        if not path.exists():
            raise FileNotFoundError(f"claims.measured: no notebook {path} to run for {name!r}")
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=timeout, resources={"metadata": {"path": str(folder)}})
        client.execute(env=dict(os.environ, FMBOOK_HEADLESS="1"))
    if not file.exists():
        raise FileNotFoundError(
            f"claims.measured: {name!r} has no recorded claims at budget {budget.name()!r} "
            f"({file}); run it first"
        )
    doc = json.loads(file.read_text(encoding="utf-8"))
    return {key: entry["value"] for key, entry in doc["claims"].items()}
