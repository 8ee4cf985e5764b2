"""fmbook: the helper package of *Foundation Models, Hands-On*.

Small, flat and readable: one module per idea of the book. Importing the
package is cheap; submodules (``fmbook.train``, ``fmbook.zoo``, ...) load on
first use, so ``import fmbook`` then ``fmbook.train.fit(...)`` just works.
"""

from __future__ import annotations

import importlib

from fmbook.runtime import device, headless, seed

__version__ = "0.1.0"

_SUBMODULES = (
    "adapt",
    "budget",
    "claims",
    "data",
    "diffusion",
    "digits",
    "icl",
    "lm",
    "metrics",
    "minilm",
    "objectives",
    "runtime",
    "scaling",
    "threads",
    "tokenizers",
    "train",
    "transformer",
    "widgets",
    "zoo",
)

__all__ = ["device", "headless", "seed", "__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f"fmbook.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'fmbook' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))
