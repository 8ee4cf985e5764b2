"""Test settings shared by the unit tests and the notebooks (nbval).

The notebooks run at the quick ``test`` budget unless FMBOOK_BUDGET says
otherwise, headless (final figures, scrubbers instead of widgets), and write
their claims and zoo cache to a fresh temporary folder unless told where.

Their kernels (not the pytest processes) run on a hostile clock (``tests/hostile_clock``): every
clock a notebook reads runs 3x fast and is read late, as on a machine 3x
slower with noisy timing. A notebook whose results depend on the machine's
speed fails the suite. ``FMBOOK_TEST_CLOCK=real`` turns it off.
"""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("FMBOOK_BUDGET", "test")
os.environ.setdefault("FMBOOK_HEADLESS", "1")
# a result out of its bounds fails the notebook (a reader's own run shows a table instead)
os.environ.setdefault("FMBOOK_CLAIMS", "strict")
_tmp = tempfile.mkdtemp(prefix="fmbook-tests-")
os.environ.setdefault("FMBOOK_CLAIMS_DIR", os.path.join(_tmp, "claims"))
os.environ.setdefault("FMBOOK_CACHE", os.path.join(_tmp, "cache"))
# Notebook kernels inherit this environment: keep the inline backend, so figures are images.
os.environ.pop("MPLBACKEND", None)

# Kernels (and any other Python started by a test) import tests/hostile_clock/sitecustomize.py.
if os.environ.setdefault("FMBOOK_TEST_CLOCK", "hostile") == "hostile":
    _clock = str(Path(__file__).resolve().parent / "tests" / "hostile_clock")
    _paths = (_clock, os.environ.get("PYTHONPATH"))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in _paths if p)

# With pytest-xdist (two workers on two cores), one thread per worker and per
# notebook kernel: oversubscribed cores make torch many times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["FMBOOK_THREADS"] = "1"  # fmbook.threads would otherwise choose for each kernel
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
