"""Where the book's tensors live, how its randomness is pinned down, whether someone is watching,
and how its files are written."""

from __future__ import annotations

import os
import random
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

DEVICE_ENV = "FMBOOK_DEVICE"
_KINDS = ("cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def device(name: str | None = None) -> torch.device:
    """The device the book computes on.

    Order of preference: CUDA, then Apple MPS, then the CPU. ``name`` (or the
    environment variable ``FMBOOK_DEVICE``) overrides the choice, e.g.
    ``"cpu"`` or ``"cuda:1"``; asking for a device that this machine does not
    have is an error, not a silent fallback.
    """
    requested = name if name is not None else os.environ.get(DEVICE_ENV, "").strip()
    if not requested:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = requested.split(":", 1)[0].lower()
    source = f"{DEVICE_ENV}={requested!r}" if name is None else f"device({requested!r})"
    if kind not in _KINDS:
        raise ValueError(
            f"{source}: unknown device kind {kind!r}; expected one of {', '.join(_KINDS)} "
            "(optionally with an index, e.g. 'cuda:0')"
        )
    try:
        dev = torch.device(requested.lower())
    except RuntimeError as err:
        raise ValueError(f"{source}: not a valid device string ({err})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{source}: CUDA was requested but this machine has no CUDA device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"{source}: CUDA device {dev.index} requested but only "
                f"{torch.cuda.device_count()} present"
            )
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"{source}: MPS was requested but is not available on this machine")
    return dev


# -- tensors, generators and devices -------------------------------------------------------
#
# The book's rule: random numbers come from a CPU ``torch.Generator`` (``seed`` returns one) and are
# moved to the device afterwards, so that a seed gives the same numbers on every machine. PyTorch
# insists that ``torch.randn(..., generator=g)`` is drawn on ``g``'s own device, and it spells one
# device two ways: ``torch.Generator(device="cuda").device`` is ``cuda`` while a tensor on it
# reports ``cuda:0``. And Apple's MPS has no float64. The helpers below handle these three facts.


def as_device(x) -> torch.device:
    """The ``torch.device`` of ``x``: a ``torch.device``, a device string (``"cuda:0"``), a tensor
    or a ``torch.Generator``."""
    if isinstance(x, torch.device):
        return x
    if isinstance(x, (torch.Tensor, torch.Generator)):
        return x.device
    if isinstance(x, str):
        try:
            return torch.device(x)
        except RuntimeError as err:
            raise ValueError(
                f"as_device: {x!r} is not a device string such as 'cpu' or 'cuda:0' ({err})"
            ) from None
    raise TypeError(
        f"as_device: expected a torch.device, a device string, a tensor or a torch.Generator, "
        f"got {type(x).__name__} {x!r}"
    )


def _index(d: torch.device) -> int:
    """The index of ``d``; no index means the current device of its type (0 where there is only
    one)."""
    if d.index is not None:
        return d.index
    if d.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.current_device()
    return 0


def same_device(a, b) -> bool:
    """True when ``a`` and ``b`` (devices, device strings, tensors or generators) live on the same
    device.

    Types must match, then indices, where a missing index stands for the current device of that
    type: ``"cuda"`` and ``"cuda:0"`` are the same device (on a machine whose current CUDA device
    is 0), ``"cuda:0"`` and ``"cuda:1"`` are not. Comparing ``torch.device`` objects with ``==``
    gets this wrong: ``torch.device("cuda") != torch.device("cuda:0")``.
    """
    a, b = as_device(a), as_device(b)
    return a.type == b.type and _index(a) == _index(b)


def draw_device(generator: torch.Generator | None, default) -> torch.device:
    """The device to draw random numbers on: ``generator``'s own (PyTorch requires it), or
    ``default`` when there is no generator (then the global generator of ``default`` is used).

    Draw there, then move the result:
    ``torch.randn(shape, generator=g, device=draw_device(g, device)).to(device)``.
    With a CPU generator the numbers are the same on every device.
    """
    if generator is None:
        return as_device(default)
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"draw_device: expected a torch.Generator or None, got {type(generator).__name__}"
        )
    return generator.device


def dtype_for(device, dtype: torch.dtype) -> torch.dtype:
    """The dtype that a tensor of ``dtype`` takes on ``device``: float64 becomes float32 on Apple's
    MPS, which has no float64; everything else is unchanged."""
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype_for: expected a torch.dtype, got {type(dtype).__name__} {dtype!r}")
    if dtype == torch.float64 and as_device(device).type == "mps":
        return torch.float32
    return dtype


def to_device(tensor: torch.Tensor, device) -> torch.Tensor:
    """``tensor`` on ``device``, float64 converted to float32 first when ``device`` is MPS (see
    :func:`dtype_for`).

    The conversion happens before the move, on the tensor's own device: a float64 tensor may not
    reach MPS even for a moment. Quantities that need float64 (noise schedules, metrics) stay on
    the CPU.
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"to_device: expected a torch.Tensor, got {type(tensor).__name__}")
    device = as_device(device)
    return tensor.to(dtype_for(device, tensor.dtype)).to(device)


def synchronize(device) -> None:
    """Wait until ``device`` has finished the work queued on it (CUDA and MPS run asynchronously;
    on the CPU there is nothing to wait for). Call it before reading a clock."""
    device = as_device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def seed(n: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy and torch (all devices) with ``n``.

    Returns a ``torch.Generator`` seeded with ``n`` as well, for code that
    prefers an explicit generator over the global one.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"seed(n): expected an int, got {type(n).__name__} {n!r}")
    if not 0 <= int(n) < 2**32:
        raise ValueError(f"seed(n): expected 0 <= n < 2**32, got {n}")
    n = int(n)
    random.seed(n)
    np.random.seed(n)
    torch.manual_seed(n)  # also seeds every CUDA device
    return torch.Generator().manual_seed(n)


@contextmanager
def seeded(n: int) -> Iterator[torch.Generator]:
    """Run a block under :func:`seed` ``(n)`` and give the caller its random state back afterwards.

    Python's ``random``, NumPy and torch (the CPU and every CUDA device) continue after the
    block exactly where they were before it, so what the block draws -- or whether it runs at
    all -- changes nothing that follows. The zoo trains its models this way: a model comes out
    the same whichever notebook trains it first, and a notebook draws the same numbers after
    loading a model whether it was trained just now or read from the cache.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    mps_state = torch.mps.get_rng_state() if _mps_available() else None
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield seed(n)
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
            if mps_state is not None:
                torch.mps.set_rng_state(mps_state)


HEADLESS_ENV = "FMBOOK_HEADLESS"


def headless() -> bool:
    """True when no person is watching: a book build, nbval, or a plain script.

    ``FMBOOK_HEADLESS=1`` (set by the book's build and test commands) or ``0``
    decides; otherwise a notebook kernel counts as watched, anything else not.
    Headless runs draw final figures only, show no progress bars and turn
    interactive controls into pre-rendered scrubbers.
    """
    raw = os.environ.get(HEADLESS_ENV, "").strip().lower()
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    if raw:
        raise ValueError(f"{HEADLESS_ENV}={raw!r}: expected 1 or 0")
    return not in_notebook()


def in_notebook() -> bool:
    """True inside a Jupyter kernel (ipykernel), False in a plain Python process."""
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def write_atomic(file: str | Path, data: bytes) -> None:
    """Write ``data`` to ``file`` all at once: a temporary file in the same folder, renamed into
    place.

    A reader (another notebook, a parallel test) sees the old file or the new one, never half
    of one, and an error while writing leaves neither a damaged file nor the temporary one.
    """
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".tmp", dir=file.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
