r"""How many CPU threads PyTorch uses, chosen for the machine this process finds.

A reader's laptop always runs something else: a browser, an indexer, a video call. PyTorch's
default, one intra-op thread per core, then makes every parallel region wait for the thread
whose core another process has taken; on a 2-core machine next to one busy process, two
threads are slower than one. fmbook chooses instead

.. math:: n = \operatorname{clamp}\big(\lfloor c - b + \tfrac12 \rfloor,\ 1,\ \min(c, p)\big),

with :math:`c` the cores this process may run on (``os.sched_getaffinity``), :math:`p` the
physical cores among them and :math:`b` the cores that *other* processes keep busy, measured
over a short window from ``/proc/stat`` minus this process's own CPU time (elsewhere :math:`b`
is taken as 0, PyTorch's own assumption). ``FMBOOK_THREADS=n`` overrides the choice. Under
``torchrun`` each process takes ``OMP_NUM_THREADS`` threads, or else an equal share of the
physical cores, since its sibling processes are the load.

:func:`apply` makes the choice and sets ``torch.set_num_threads``; the line at the top of every
notebook (:func:`fmbook.budget.describe`) calls it and shows it, and :func:`fmbook.train.fit`
checks again when a long run starts (the load may have changed), not on every step. Only the
CPU is affected: on CUDA and MPS the choice is left to PyTorch. The number of threads never
changes what is computed, only how fast; floating-point sums may round differently.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fmbook.runtime import device as current_device

THREADS_ENV = "FMBOOK_THREADS"
WINDOW_S = 0.15  # how long the load is watched: a dozen scheduler ticks per core


@dataclass(frozen=True)
class Choice:
    """A choice of threads and what it was made from."""

    threads: int
    usable: int
    physical: int
    busy: float | None  # None: not measured (override, or no /proc/stat)
    source: str  # "auto", "FMBOOK_THREADS" or "torchrun"

    def describe(self) -> str:
        if self.source != "auto":
            return f"threads: {self.threads} ({self.source})"
        seen = "load not measured" if self.busy is None else f"{self.busy:.1f} busy with other work"
        return f"threads: {self.threads} of {self.usable} cores ({seen})"


def choose(usable: int, physical: int, busy: float) -> int:
    """Intra-op threads for ``usable`` cores of which ``physical`` are physical and ``busy`` are
    kept busy by other processes: the free cores, rounded, at least 1 and at most
    min(usable, physical)."""
    for name, value in (("usable", usable), ("physical", physical)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"threads.choose: {name} must be an int >= 1, got {value!r}")
    if not (isinstance(busy, (int, float)) and math.isfinite(busy) and busy >= 0):
        raise ValueError(f"threads.choose: busy must be a finite number >= 0, got {busy!r}")
    cap = min(usable, physical)
    return max(1, min(cap, math.floor(usable - busy + 0.5)))


def usable_cores() -> list[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int], sys_root: Path = Path("/sys/devices/system/cpu")) -> int:
    """Distinct physical cores among ``cpus`` (hyper-threads of one core count once).

    Read from Linux's CPU topology; where it is missing, every CPU counts as a core.
    """
    groups = set()
    for cpu in cpus:
        topology = sys_root / f"cpu{cpu}" / "topology"
        for name in ("core_cpus_list", "thread_siblings_list"):
            try:
                groups.add((topology / name).read_text().strip())
                break
            except OSError:
                continue
        else:
            groups.add(str(cpu))
    return max(1, len(groups))


def _jiffies(cpus: list[int], stat: str) -> tuple[int, int]:
    """(all, idle) scheduler ticks summed over ``cpus``, from the text of /proc/stat."""
    total = idle = 0
    wanted = {f"cpu{c}" for c in cpus}
    for line in stat.splitlines():
        fields = line.split()
        if fields and fields[0] in wanted:
            ticks = [int(x) for x in fields[1:]]
            total += sum(ticks[:8])  # user nice system idle iowait irq softirq steal
            idle += ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return total, idle


def busy_from_ticks(
    before: tuple[int, int], after: tuple[int, int], n_cpus: int, own_seconds: float, hz: int
) -> float:
    """Cores kept busy by other processes between two /proc/stat readings.

    busy = (non-idle CPU time of all processes - this process's CPU time) / elapsed time,
    with elapsed time = all ticks / (hz * n_cpus).
    """
    total, idle = after[0] - before[0], after[1] - before[1]
    if total <= 0:
        return 0.0
    elapsed = total / (hz * n_cpus)
    others = (total - idle) / hz - own_seconds
    return max(0.0, others / elapsed)


def measure_busy(cpus: list[int], window: float = WINDOW_S) -> float | None:
    """Cores among ``cpus`` that other processes keep busy, watched for ``window`` seconds.

    None where ``/proc/stat`` does not exist (macOS, Windows).
    """
    stat = Path("/proc/stat")
    if not stat.exists():
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    own0, before = os.times(), _jiffies(cpus, stat.read_text())
    time.sleep(window)
    own1, after = os.times(), _jiffies(cpus, stat.read_text())
    own = (own1.user + own1.system) - (own0.user + own0.system)
    return busy_from_ticks(before, after, len(cpus), own, hz)


def override() -> int | None:
    """The number of threads ``FMBOOK_THREADS`` asks for, or None (unset or ``auto``)."""
    raw = os.environ.get(THREADS_ENV, "").strip().lower()
    if raw in ("", "auto"):
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{THREADS_ENV}={raw!r}: expected a whole number >= 1 or 'auto'")
    return int(raw)


_last: Choice | None = None


def decide() -> Choice:
    """The choice for this machine now, without applying it."""
    cpus = usable_cores()
    physical = physical_cores(cpus) if sys.platform.startswith("linux") else len(cpus)
    forced = override()
    if forced is not None:
        return Choice(forced, len(cpus), physical, None, THREADS_ENV)
    local = os.environ.get("LOCAL_WORLD_SIZE")
    if local is not None:  # one of several processes that torchrun started on this machine
        share = max(1, min(len(cpus), physical) // max(1, int(local)))
        omp = os.environ.get("OMP_NUM_THREADS", "").strip()
        threads = int(omp) if omp.isdigit() and int(omp) >= 1 else share
        return Choice(threads, len(cpus), physical, None, "torchrun")
    busy = measure_busy(cpus)
    return Choice(choose(len(cpus), physical, busy or 0.0), len(cpus), physical, busy, "auto")


def apply(device=None) -> Choice | None:
    """Decide and set ``torch.set_num_threads``; returns the choice (None when ``device`` is not
    the CPU)."""
    global _last
    if (device if device is not None else current_device()).type != "cpu":
        return None
    choice = decide()
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    _last = choice
    return choice


def last() -> Choice | None:
    """The last choice :func:`apply` made in this process."""
    return _last
