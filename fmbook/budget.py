"""The run budget: how much compute a notebook spends.

``FMBOOK_BUDGET`` selects it once per process:

* ``test``: CI and nbval; every notebook in well under a minute, enough to see
  that the code runs and that results move the right way;
* ``full`` (default): what a reader gets; the best result a chapter can show in
  a few minutes on a 2-core laptop CPU.

A notebook reads the budget at its top and derives every size from it with
:func:`pick`, so the prose never hard-codes a number that the budget changes.
"""

from __future__ import annotations

import os

from fmbook import threads
from fmbook.runtime import device

BUDGET_ENV = "FMBOOK_BUDGET"
BUDGETS = ("test", "full")
DEFAULT = "full"


def name(given: str | None = None) -> str:
    """The budget ``given``, or the current one, ``"test"`` or ``"full"``, read from
    ``FMBOOK_BUDGET``.

    Code that needs another budget's numbers (a benchmark comparing budgets) passes it
    as ``given`` instead of changing the environment.
    """
    if given is not None:
        if given not in BUDGETS:
            raise ValueError(
                f"budget {given!r} is not a budget; expected one of {', '.join(BUDGETS)}"
            )
        return given
    raw = os.environ.get(BUDGET_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT
    value = raw.strip().lower()
    if value not in BUDGETS:
        raise ValueError(
            f"{BUDGET_ENV}={raw!r} is not a budget; expected one of {', '.join(BUDGETS)} "
            f"(or unset for {DEFAULT!r})"
        )
    return value


def is_test() -> bool:
    """True under the quick ``test`` budget."""
    return name() == "test"


def pick(*, test, full, gpu=None, budget: str | None = None):
    """The value for the current budget (or ``budget``): ``pick(test=200, full=5000)``.

    ``gpu``, if given, replaces ``full`` when the book runs at ``full`` budget
    on a CUDA device, where a chapter may scale up (more steps, larger batch).
    """
    current = name(budget)
    if current == "test":
        return test
    if gpu is not None:
        if device().type == "cuda":
            return gpu
    return full


def describe() -> str:
    """One line for the top of a notebook: budget, device and, on the CPU, the threads chosen.

    On the CPU it also chooses the number of threads for this machine
    (:func:`fmbook.threads.apply`).
    """
    line = f"budget: {name()} (set {BUDGET_ENV}=test or full) | device: {device()}"
    choice = threads.apply(device())
    return line + (f" | {choice.describe()}" if choice is not None else "")
