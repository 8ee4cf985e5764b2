"""A hostile clock for the test suite: this Python process runs as on a slow, noisy machine.

Python imports ``sitecustomize`` at start-up from the first folder on ``sys.path`` that has one;
the test suite puts this folder first in ``PYTHONPATH`` of the notebook kernels (see
``conftest.py``). With ``FMBOOK_TEST_CLOCK=hostile``, in a Jupyter kernel (the pytest
processes themselves keep the real clock; ``hostile-all`` makes every Python process hostile,
for the clock's own tests), every clock a notebook reads to time something --
``time.perf_counter``, ``time.process_time``, ``time.thread_time``, ``time.time`` and their
``_ns`` twins -- then

* runs ``FMBOOK_TEST_CLOCK_SLOWDOWN`` times fast (default 3): every duration looks 3x longer,
  as on a machine 3x slower; and
* is read late: each read adds ``FMBOOK_TEST_CLOCK_LATENCY`` seconds (default 1) to the clock,
  as if the process were preempted just before it. A short interval gains as much as a long one,
  so speed ratios collapse towards 1: an interval of real length t measures 3t + 1 s or more,
  and a speed-up measured over runs shorter than a third of a second is more than halved.

Clocks stay monotone. ``time.monotonic`` is left alone: the event loops of Jupyter's kernel
and ``threading`` time their waits with it. No notebook or fmbook code may read it (a test in
``tests/test_hostile_clock.py`` checks).

Nothing in the book may fail under this clock: a result that depends on the speed of the
machine is a measurement (``fmbook.claims.measure``), never a bound that gates.
"""

import itertools
import os
import sys
import time

_mode = os.environ.get("FMBOOK_TEST_CLOCK")
_kernel = "ipykernel_launcher" in getattr(sys, "orig_argv", ())
if _mode == "hostile-all" or (_mode == "hostile" and _kernel):
    _SLOWDOWN = float(os.environ.get("FMBOOK_TEST_CLOCK_SLOWDOWN", "3"))
    _LATENCY = float(os.environ.get("FMBOOK_TEST_CLOCK_LATENCY", "1"))
    _reads = itertools.count(1)

    def _hostile(real, per_second):
        origin = real()

        def clock():
            late = next(_reads) * _LATENCY * per_second
            value = origin + _SLOWDOWN * (real() - origin) + late
            return int(value) if isinstance(origin, int) else value

        clock.__name__ = real.__name__
        clock.__doc__ = (
            f"{real.__name__}, {_SLOWDOWN:g}x fast and {_LATENCY:g} s late per read (test clock)"
        )
        return clock

    for _name in ("perf_counter", "process_time", "thread_time", "time"):
        setattr(time, _name, _hostile(getattr(time, _name), 1))
        setattr(time, _name + "_ns", _hostile(getattr(time, _name + "_ns"), 10**9))
    time.fmbook_hostile_clock = (_SLOWDOWN, _LATENCY)
