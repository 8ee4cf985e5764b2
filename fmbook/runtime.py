"""Where the book's tensors live, and how its randomness is pinned down."""

from __future__ import annotations

import os
import random

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
                f"{source}: CUDA device {dev.index} requested but only {torch.cuda.device_count()} present"
            )
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"{source}: MPS was requested but is not available on this machine")
    return dev


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
    import sys

    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")
