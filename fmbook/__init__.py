"""fmbook: the helper package of *Foundation Models, Hands-On*.

Small, flat and readable. One rule decides where code lives: **a module is named
after an idea of the book and holds that idea**, whichever chapter first needs it.

* the models and their math: ``transformer`` (attention, GPT, BERT), ``objectives``
  (every training loss), ``diffusion`` (noise schedules, samplers, guidance),
  ``tokenizers``, ``minilm`` (a real pretrained encoder, from an installed package),
  ``adapt`` (heads, probes, LoRA, finetuning), ``icl`` (learning in
  context), ``scaling`` (power laws), ``metrics`` (how samples and classifiers are scored),
  ``align`` (instruction tuning, reward models, RLHF, DPO), ``serve`` (what serving costs),
  ``speculative`` (speculative decoding: the rejection rule, generation with a draft, the drafts),
  ``quantize`` (weights in 8 and 4 bits), ``export`` (to ONNX and ONNX Runtime), ``server``
  (a streaming HTTP server);
* data, and the tasks built from data: ``fmbook.data`` (Shakespeare, the table of models,
  the spelling task, batching);
* the models the book trains once and reuses: a *recipe* (``X_config``, ``build_X``,
  ``train_X``) in the module of the idea it demonstrates -- ``lm`` (language models of
  Shakespeare), ``digits`` (a digit generator and the classifier that scores it), ``icl`` --
  cached by ``zoo``;
* the machinery of a run: ``train`` (one training loop), ``parallel`` (the same loop on
  several processes, under ``torchrun``), ``budget``, ``runtime``
  (device, seeds, files), ``threads``, ``claims`` (every number the prose states),
  ``widgets``.

Importing the package is cheap; submodules (``fmbook.train``, ``fmbook.zoo``, ...) load on
first use, so ``import fmbook`` then ``fmbook.train.fit(...)`` just works.
"""

from __future__ import annotations

import importlib

from fmbook.runtime import device, headless, seed

__version__ = "0.1.0"

_SUBMODULES = (
    "adapt",
    "align",
    "budget",
    "claims",
    "data",
    "diffusion",
    "digits",
    "export",
    "icl",
    "lm",
    "metrics",
    "minilm",
    "objectives",
    "parallel",
    "quantize",
    "runtime",
    "scaling",
    "serve",
    "server",
    "speculative",
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
