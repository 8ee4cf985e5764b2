"""fmbook.runtime: the device the book computes on, seeds, headless runs, atomic writes, and the
device helpers that must hold on CUDA and MPS.

The device decisions (which device to choose or draw on, whether two devices are the same, which
dtype a tensor takes on MPS) depend only on what the machine reports and on ``torch.device``
objects, so they are tested here on the CPU with the availability of CUDA and MPS pretended.
"""

import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

import fmbook
from fmbook import runtime
from fmbook.runtime import as_device, draw_device, dtype_for, same_device, to_device


@pytest.fixture
def machine(monkeypatch):
    """Pretend which accelerators this machine has: ``machine(cuda=True, mps=False)``."""
    monkeypatch.delenv("FMBOOK_DEVICE", raising=False)

    def pretend(cuda: bool, mps: bool, cuda_count: int = 1):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda_count if cuda else 0)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return pretend


# -- device: which one the book chooses ---------------------------------------------------------


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [
        (False, False, "cpu"),  # a laptop without a GPU
        (True, False, "cuda"),  # an NVIDIA GPU
        (False, True, "mps"),  # an Apple-silicon Mac
        (True, True, "cuda"),  # both: CUDA first
    ],
)
def test_device_prefers_cuda_then_mps_then_the_cpu(machine, cuda, mps, expected):
    machine(cuda=cuda, mps=mps)
    assert runtime.device() == torch.device(expected)


@pytest.mark.parametrize(
    ("env", "argument", "expected"),
    [
        ("cpu", None, "cpu"),  # the environment overrides the accelerator
        (" CPU ", None, "cpu"),
        ("", None, "cuda"),  # empty is unset
        ("cuda:0", None, "cuda:0"),
        ("mps", "cpu", "cpu"),  # the argument overrides the environment
        ("cpu", "cuda", "cuda"),
    ],
)
def test_device_override_by_env_and_argument(machine, monkeypatch, env, argument, expected):
    machine(cuda=True, mps=False)
    monkeypatch.setenv("FMBOOK_DEVICE", env)
    assert runtime.device(argument) == torch.device(expected)


@pytest.mark.parametrize("bad", ["tpu", "gpu", "cpux"])
def test_device_unknown_kind_is_a_clear_error(monkeypatch, bad):
    monkeypatch.setenv("FMBOOK_DEVICE", bad)
    with pytest.raises(ValueError, match="FMBOOK_DEVICE"):
        fmbook.device()


@pytest.mark.parametrize(
    ("cuda", "mps", "asked", "word"),
    [
        (False, True, "cuda", "CUDA"),  # asking is an error, not a fallback to the CPU
        (True, False, "cuda:1", "only 1"),  # one GPU: index 1 does not exist
        (True, False, "mps", "MPS"),
    ],
)
def test_device_missing_is_an_error_not_a_fallback(machine, cuda, mps, asked, word):
    machine(cuda=cuda, mps=mps)
    with pytest.raises(ValueError, match=word):
        runtime.device(asked)


# -- seed ----------------------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (1.5, TypeError),
        ("3", TypeError),
        (None, TypeError),
        (True, TypeError),
        (-1, ValueError),
        (2**32, ValueError),
    ],
)
def test_seed_rejects_bad_values(bad, error):
    with pytest.raises(error, match="seed"):
        fmbook.seed(bad)


# -- headless ------------------------------------------------------------------------------------


def test_headless_env(monkeypatch):
    monkeypatch.setenv("FMBOOK_HEADLESS", "0")
    assert not fmbook.headless()
    monkeypatch.setenv("FMBOOK_HEADLESS", "1")
    assert fmbook.headless()
    monkeypatch.delenv("FMBOOK_HEADLESS")
    assert fmbook.headless()  # a plain Python process has no one watching
    monkeypatch.setenv("FMBOOK_HEADLESS", "maybe")
    with pytest.raises(ValueError, match="FMBOOK_HEADLESS"):
        fmbook.headless()


# -- write_atomic --------------------------------------------------------------------------------


def test_write_atomic_writes_the_bytes_and_leaves_only_the_file(tmp_path):
    file = tmp_path / "new" / "folder" / "x.bin"
    runtime.write_atomic(file, b"first")
    runtime.write_atomic(str(file), b"second, longer")
    assert file.read_bytes() == b"second, longer"
    assert list(file.parent.iterdir()) == [file]


def test_write_atomic_renames_a_complete_file_into_place(tmp_path, monkeypatch):
    """Until the rename, the old file is whole and untouched; what is renamed is the whole new
    one."""
    file = tmp_path / "x.bin"
    file.write_bytes(b"old")
    real_replace, seen = os.replace, []

    def replace(src, dst):
        seen.append((open(src, "rb").read(), os.fspath(dst), file.read_bytes()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    runtime.write_atomic(file, b"new" * 1000)
    assert seen == [(b"new" * 1000, os.fspath(file), b"old")]
    assert file.read_bytes() == b"new" * 1000


@pytest.mark.parametrize("failure", ["rename", "write"])
def test_a_failed_write_atomic_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, failure):
    file = tmp_path / "x.bin"
    file.write_bytes(b"old")
    if failure == "rename":

        def boom(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(os, "replace", boom)
        with pytest.raises(OSError, match="disk full"):
            runtime.write_atomic(file, b"new")
    else:
        with pytest.raises(TypeError):
            runtime.write_atomic(file, "not bytes")
    assert list(tmp_path.iterdir()) == [file] and file.read_bytes() == b"old"


# -- same_device ---------------------------------------------------------------------------------


def test_torch_device_equality_is_why_same_device_exists():
    # a generator made for "cuda" reports `cuda`, a tensor on it `cuda:0`; == calls them different
    assert torch.device("cuda") != torch.device("cuda:0")
    assert same_device(torch.device("cuda"), torch.device("cuda:0"))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("cuda", "cuda:0"),
        (torch.device("cuda:0"), "cuda"),
        ("cpu", torch.device("cpu")),
        ("cpu", "cpu:0"),
        ("mps", "mps:0"),
        (torch.Generator(device=torch.device("cpu")), "cpu"),
        (torch.Generator(device="cpu"), torch.zeros(1)),
    ],
)
def test_same_device_treats_no_index_as_the_current_device(a, b):
    assert same_device(a, b) and same_device(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("cpu", "cuda"),
        ("cpu", "cuda:0"),
        (torch.Generator(), torch.device("cuda")),
        ("cuda:0", "cuda:1"),
        ("cuda", "cuda:1"),  # no CUDA here, or current device 0
        ("mps", "cpu"),
        ("cuda", "mps"),
    ],
)
def test_same_device_tells_different_devices_apart(a, b, monkeypatch):
    if torch.cuda.is_available():
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert not same_device(a, b) and not same_device(b, a)


def test_same_device_follows_the_current_cuda_device(monkeypatch):
    # "cuda" means the current CUDA device; pretend it is device 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert same_device("cuda", "cuda:1")
    assert not same_device("cuda", "cuda:0")


def test_as_device_accepts_devices_strings_tensors_and_generators():
    assert as_device("cuda:1") == torch.device("cuda", 1)
    assert as_device(torch.device("mps")) == torch.device("mps")
    assert as_device(torch.zeros(1)) == torch.device("cpu")
    assert as_device(torch.Generator()) == torch.device("cpu")


def test_as_device_bad_input_says_what_was_expected():
    with pytest.raises(TypeError, match="device string"):
        as_device(0)
    with pytest.raises(TypeError, match="NoneType"):
        same_device(None, "cpu")
    with pytest.raises(ValueError, match="gpu"):
        same_device("gpu", "cpu")


# -- draw_device ---------------------------------------------------------------------------------


def test_draw_device_is_the_generators_device_else_the_default():
    assert draw_device(torch.Generator(), "cuda") == torch.device("cpu")
    assert (
        draw_device(torch.Generator(device=torch.device("cpu")), torch.device("mps")).type == "cpu"
    )
    assert draw_device(None, "cuda:1") == torch.device("cuda", 1)
    assert draw_device(None, torch.device("mps")) == torch.device("mps")


def test_draw_device_rejects_what_is_not_a_generator():
    with pytest.raises(TypeError, match="Generator"):
        draw_device(0, "cpu")


# -- MPS has no float64 --------------------------------------------------------------------------


def test_dtype_for_mps_turns_float64_into_float32_only():
    mps = torch.device("mps")
    assert dtype_for(mps, torch.float64) == torch.float32
    assert dtype_for("mps:0", torch.float64) == torch.float32
    assert dtype_for(mps, torch.float32) == torch.float32
    assert dtype_for(mps, torch.float16) == torch.float16
    assert dtype_for(mps, torch.long) == torch.long
    assert dtype_for(mps, torch.bool) == torch.bool
    for other in ("cpu", "cuda", torch.device("cuda:0"), "meta"):
        assert dtype_for(other, torch.float64) == torch.float64


def test_dtype_for_bad_input():
    with pytest.raises(TypeError, match="dtype"):
        dtype_for("mps", "float64")
    with pytest.raises(TypeError, match="float"):
        dtype_for(1.5, torch.float64)


def test_to_device_keeps_dtype_and_values_off_mps():
    x = torch.tensor([0.1, 1 / 3], dtype=torch.float64)
    out = to_device(x, torch.device("cpu"))
    assert out.dtype == torch.float64 and torch.equal(out, x)
    meta = to_device(x, "meta")  # a device without data: the move happens, the dtype stays
    assert meta.device.type == "meta" and meta.dtype == torch.float64
    ids = torch.arange(3)
    assert to_device(ids, "cpu").dtype == torch.long


def test_to_device_converts_float64_before_it_moves_to_mps(monkeypatch):
    # no MPS needed: stand in for the copy to MPS and record the dtype that would arrive there
    real_to = torch.Tensor.to
    arrived = []

    def fake_to(self, *args, **kwargs):
        target = args[0] if args else kwargs.get("device")
        if isinstance(target, (torch.device, str)) and torch.device(target).type == "mps":
            arrived.append(self.dtype)
            return self
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    mps = torch.device("mps")
    out = to_device(torch.tensor([0.25, 0.5], dtype=torch.float64), mps)
    assert arrived == [torch.float32] and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([0.25, 0.5]))
    arrived.clear()
    assert to_device(torch.arange(2), mps).dtype == torch.long and arrived == [torch.long]
    arrived.clear()
    assert to_device(torch.ones(2, dtype=torch.float16), "mps").dtype == torch.float16
    assert arrived == [torch.float16]


def test_to_device_bad_input():
    with pytest.raises(TypeError, match="Tensor"):
        to_device([1.0, 2.0], "cpu")
    with pytest.raises(ValueError, match="device string"):
        to_device(torch.zeros(1), "gpu")


# -- the package ---------------------------------------------------------------------------------


def test_import_fmbook_is_light():
    code = (
        "import sys, time, torch; t = time.perf_counter(); import fmbook; "
        "print(time.perf_counter() - t, "
        "[m for m in ('matplotlib', 'ipywidgets', 'IPython') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, heavy = out.stdout.split(" ", 1)
    assert heavy.strip() == "[]"
    assert float(seconds) < 1.5


def test_seeded_pins_the_block_and_gives_the_caller_its_random_state_back():
    def draws():
        return random.random(), float(np.random.rand()), torch.rand(2).tolist()

    fmbook.seed(5)
    expected = draws()
    fmbook.seed(5)
    with runtime.seeded(0):
        inside = torch.rand(3)
    assert draws() == expected  # as if the block had never run
    with runtime.seeded(0):
        assert torch.equal(torch.rand(3), inside)  # the block itself is pinned by its seed


def test_synchronize_accepts_devices_and_names_and_waits_for_nothing_on_the_cpu():
    from fmbook.runtime import synchronize

    assert synchronize("cpu") is None
    assert synchronize(torch.device("cpu")) is None
