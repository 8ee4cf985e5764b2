import random

import numpy as np
import pytest
import torch

import fmbook
from fmbook import budget


def test_device_default_is_cpu_here_or_accelerator(monkeypatch):
    monkeypatch.delenv("FMBOOK_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else ("mps" if fmbook.runtime._mps_available() else "cpu")
    assert fmbook.device().type == expected


def test_device_override_by_env_and_argument(monkeypatch):
    monkeypatch.setenv("FMBOOK_DEVICE", "cpu")
    assert fmbook.device() == torch.device("cpu")
    monkeypatch.setenv("FMBOOK_DEVICE", "")
    assert fmbook.device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("bad", ["tpu", "gpu", "cpux"])
def test_device_unknown_kind_is_a_clear_error(monkeypatch, bad):
    monkeypatch.setenv("FMBOOK_DEVICE", bad)
    with pytest.raises(ValueError, match=f"FMBOOK_DEVICE={bad!r}.*expected one of cpu, cuda, mps"):
        fmbook.device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_missing_cuda_is_an_error_not_a_fallback():
    with pytest.raises(ValueError, match="no CUDA device"):
        fmbook.device("cuda")


def test_seed_makes_python_numpy_torch_repeat():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    fmbook.seed(123)
    first = draw()
    fmbook.seed(123)
    assert draw() == first
    fmbook.seed(124)
    assert draw() != first


def test_seed_returns_a_seeded_generator():
    a = torch.rand(3, generator=fmbook.seed(5))
    b = torch.rand(3, generator=fmbook.seed(5))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("bad", [1.5, "3", None, True, -1, 2**32])
def test_seed_rejects_bad_values(bad):
    with pytest.raises((TypeError, ValueError), match="seed"):
        fmbook.seed(bad)


def test_budget_default_is_full(monkeypatch):
    monkeypatch.delenv("FMBOOK_BUDGET", raising=False)
    assert budget.name() == "full"
    assert budget.pick(test=1, full=2) == 2


def test_budget_test(monkeypatch):
    monkeypatch.setenv("FMBOOK_BUDGET", " Test ")
    assert budget.name() == "test" and budget.is_test()
    assert budget.pick(test=1, full=2, gpu=3) == 1


def test_budget_gpu_value_only_on_cuda(monkeypatch):
    monkeypatch.setenv("FMBOOK_BUDGET", "full")
    monkeypatch.setenv("FMBOOK_DEVICE", "cpu")
    assert budget.pick(test=1, full=2, gpu=3) == 2


def test_budget_unknown_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("FMBOOK_BUDGET", "fast")
    with pytest.raises(ValueError, match="FMBOOK_BUDGET='fast' is not a budget; expected one of test, full"):
        budget.name()


def test_pick_needs_both_keywords():
    with pytest.raises(TypeError):
        budget.pick(200, 5000)


def test_headless_env(monkeypatch):
    monkeypatch.setenv("FMBOOK_HEADLESS", "0")
    assert not fmbook.headless()
    monkeypatch.setenv("FMBOOK_HEADLESS", "1")
    assert fmbook.headless()
    monkeypatch.delenv("FMBOOK_HEADLESS")
    assert fmbook.headless()  # a plain Python process has no one watching
    monkeypatch.setenv("FMBOOK_HEADLESS", "maybe")
    with pytest.raises(ValueError, match="expected 1 or 0"):
        fmbook.headless()


def test_import_fmbook_is_light():
    import subprocess
    import sys

    code = (
        "import sys, time, torch; t = time.perf_counter(); import fmbook; "
        "print(time.perf_counter() - t, [m for m in ('matplotlib', 'ipywidgets', 'IPython') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, heavy = out.stdout.split(" ", 1)
    assert heavy.strip() == "[]"
    assert float(seconds) < 1.5
