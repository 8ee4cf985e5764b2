"""Test settings shared by the unit tests and the notebooks (nbval).

The notebooks run at the quick ``test`` budget unless FMBOOK_BUDGET says
otherwise, headless (final figures, scrubbers instead of widgets), and write
their claims and zoo cache to a fresh temporary folder unless told where.
"""

import os
import tempfile

os.environ.setdefault("FMBOOK_BUDGET", "test")
os.environ.setdefault("FMBOOK_HEADLESS", "1")
_tmp = tempfile.mkdtemp(prefix="fmbook-tests-")
os.environ.setdefault("FMBOOK_CLAIMS_DIR", os.path.join(_tmp, "claims"))
os.environ.setdefault("FMBOOK_CACHE", os.path.join(_tmp, "cache"))
# Notebook kernels inherit this environment: keep the inline backend, so figures are images.
os.environ.pop("MPLBACKEND", None)

# With pytest-xdist (two workers on two cores), one thread per worker and per
# notebook kernel: oversubscribed cores make torch many times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
