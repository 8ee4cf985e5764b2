"""Measured claims: every number the book states, recorded and checked.

A notebook names itself once, records each number its prose states, and
checks them at the end::

    claims = fmbook.claims.notebook("first_model")
    claims.record("val_loss", val_loss, "nats/char")
    ...
    claims.check()

Records go to ``<FMBOOK_CLAIMS_DIR>/<notebook>.<budget>.json`` (default: the
``claims`` folder of the cache). Thresholds live beside the notebook, in
``<notebook>.claims.toml``, one table per claim with a bound per budget::

    [val_loss]
    description = "validation loss of the first model"
    test = { max = 3.2 }
    full = { max = 2.1 }

``check`` fails if a recorded claim has no threshold, a threshold was never
measured, or a value is out of bounds. Inside Jupyter Book, each value is
also glued (myst-nb) under its name so the prose can cite it as
``{glue:text}`val_loss:.2f```.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from fmbook import budget

CLAIMS_DIR_ENV = "FMBOOK_CLAIMS_DIR"
BOUNDS = ("min", "max")


def claims_dir() -> Path:
    root = os.environ.get(CLAIMS_DIR_ENV)
    if root:
        return Path(root).expanduser()
    from fmbook.zoo import cache_dir

    return cache_dir() / "claims"


@dataclass(frozen=True)
class Result:
    name: str
    value: float
    unit: str
    bounds: dict
    ok: bool

    def describe(self) -> str:
        bound = " and ".join(f"{'>=' if k == 'min' else '<='} {v:g}" for k, v in self.bounds.items())
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name} = {self.value:.4g} {self.unit} (needs {bound})"


def load_thresholds(file: Path, budget_name: str) -> dict[str, dict]:
    """The bounds for ``budget_name`` of every claim in a ``.claims.toml`` file."""
    try:
        table = tomllib.loads(Path(file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"claims: no thresholds file {file}") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"claims: {file} is not valid TOML ({err})") from None
    out = {}
    for name, spec in table.items():
        if not isinstance(spec, dict) or budget_name not in spec:
            raise ValueError(f"claims: {file}: [{name}] has no bound for budget {budget_name!r}")
        bounds = spec[budget_name]
        if not isinstance(bounds, dict) or not bounds or set(bounds) - set(BOUNDS):
            raise ValueError(
                f"claims: {file}: [{name}].{budget_name} must be a table with 'min' and/or "
                f"'max', got {bounds!r}"
            )
        out[name] = {k: float(bounds[k]) for k in BOUNDS if k in bounds}
    return out


class Notebook:
    """The claims of one notebook: record values, write them to JSON, check them."""

    def __init__(self, name: str, folder: str | Path | None = None):
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"claims.notebook: name must be a plain file stem, got {name!r}")
        self.name = name
        self.folder = Path(folder) if folder is not None else Path.cwd()
        self.budget = budget.name()
        self.values: dict[str, dict] = {}

    @property
    def thresholds_file(self) -> Path:
        return self.folder / f"{self.name}.claims.toml"

    @property
    def output_file(self) -> Path:
        return claims_dir() / f"{self.name}.{self.budget}.json"

    def record(self, name: str, value: float, unit: str = "") -> float:
        """Record claim ``name`` with ``value`` (a finite real number) in ``unit``."""
        if not isinstance(name, str) or not name.replace("_", "").isalnum():
            raise ValueError(f"claims.record: name must be letters, digits and '_', got {name!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"claims.record({name!r}): value must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"claims.record({name!r}): value must be finite, got {number}")
        self.values[name] = {"value": number, "unit": unit, "time": time.time()}
        self._write()
        _glue(name, number)
        return number

    def _write(self) -> None:
        from fmbook.runtime import device

        out = self.output_file
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "notebook": self.name,
            "budget": self.budget,
            "device": str(device()),
            "claims": self.values,
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
        os.replace(tmp, out)

    def check(self, raise_on_failure: bool = True) -> list[Result]:
        """Compare every recorded value with its bound for the current budget."""
        return check_values(
            {k: v["value"] for k, v in self.values.items()},
            load_thresholds(self.thresholds_file, self.budget),
            units={k: v["unit"] for k, v in self.values.items()},
            where=f"{self.name} at budget {self.budget!r}",
            raise_on_failure=raise_on_failure,
        )


def check_values(
    values: dict[str, float],
    thresholds: dict[str, dict],
    *,
    units: dict[str, str] | None = None,
    where: str = "",
    raise_on_failure: bool = True,
) -> list[Result]:
    """Check measured ``values`` against ``thresholds``; print a line per claim."""
    units = units or {}
    problems = []
    unmeasured = sorted(set(thresholds) - set(values))
    unbounded = sorted(set(values) - set(thresholds))
    if unmeasured:
        problems.append(f"thresholds never measured: {', '.join(unmeasured)}")
    if unbounded:
        problems.append(f"claims without a threshold: {', '.join(unbounded)}")
    results = []
    for name in sorted(set(values) & set(thresholds)):
        value, bounds = values[name], thresholds[name]
        ok = value >= bounds.get("min", -math.inf) and value <= bounds.get("max", math.inf)
        results.append(Result(name, value, units.get(name, ""), bounds, ok))
    for r in results:
        print(r.describe())
    failed = [r.describe() for r in results if not r.ok]
    if (failed or problems) and raise_on_failure:
        raise AssertionError(f"claims of {where} failed:\n  " + "\n  ".join(failed + problems))
    return results


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
    """Record a claim of the current notebook (see :func:`notebook`)."""
    return _require_current().record(name, value, unit)


def check(raise_on_failure: bool = True) -> list[Result]:
    """Check the claims of the current notebook."""
    return _require_current().check(raise_on_failure)


def _glue(name: str, value: float) -> None:
    from fmbook.runtime import in_notebook

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
        if not path.exists():
            raise FileNotFoundError(f"claims.measured: no notebook {path} to run for {name!r}")
        nb = nbformat.read(path, as_version=4)
        env_headless = os.environ.get("FMBOOK_HEADLESS")
        os.environ["FMBOOK_HEADLESS"] = "1"
        try:
            NotebookClient(nb, timeout=timeout, resources={"metadata": {"path": str(folder)}}).execute()
        finally:
            if env_headless is None:
                os.environ.pop("FMBOOK_HEADLESS", None)
            else:
                os.environ["FMBOOK_HEADLESS"] = env_headless
    if not file.exists():
        raise FileNotFoundError(
            f"claims.measured: {name!r} has no recorded claims at budget {budget.name()!r} ({file}); run it first"
        )
    doc = json.loads(file.read_text(encoding="utf-8"))
    return {key: entry["value"] for key, entry in doc["claims"].items()}
