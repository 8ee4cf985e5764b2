r"""Pretrained on demand: train a named model once at the current budget, cache it, reload it.

A *recipe* says how to build a model from a config and how to train it. The
first :func:`load` of a name trains the model and writes one cache file,
``<FMBOOK_CACHE>/zoo/<name>-<budget>.fmz``::

    FMBOOK-ZOO 1 sha256=<hex digest of the rest>\n
    <torch.save({"name", "budget", "config", "state_dict"})>

Later loads verify the digest before ``torch.load(..., weights_only=True)``.
A truncated, corrupt or stale file (config changed) is treated as missing:
the model is retrained with a warning. Files are written to a temporary file
in the same folder and renamed into place, so parallel runs never see or
leave a half-written file.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fmbook import budget, parallel
from fmbook.runtime import device as default_device
from fmbook.runtime import seeded, write_atomic

CACHE_ENV = "FMBOOK_CACHE"
MAGIC = b"FMBOOK-ZOO 1 sha256="


@dataclass(frozen=True)
class Recipe:
    """How to make a zoo model: ``config()`` (may depend on the budget), ``build(config)``
    returning a fresh ``nn.Module``, and ``train(model, config)`` training it in place
    and returning a dict of plain values to keep beside the weights (or None)."""

    name: str
    config: Callable[[], dict]
    build: Callable[[dict], torch.nn.Module]
    train: Callable[[torch.nn.Module, dict], object]
    description: str = ""


_RECIPES: dict[str, Recipe] = {}
# Recipes defined by the chapters' modules, imported the first time they are asked for:
# name -> "module:attribute" of a Recipe.
_BUILTIN: dict[str, str] = {
    "gpt-shakespeare": "fmbook.lm:GPT_RECIPE",
    "bert-shakespeare": "fmbook.lm:BERT_RECIPE",
    "digits-evaluator": "fmbook.digits:EVALUATOR_RECIPE",
    "ddpm-digits": "fmbook.digits:DDPM_RECIPE",
    "icl-linear": "fmbook.icl:ICL_RECIPE",
    "gpt-instruct": "fmbook.align:INSTRUCT_RECIPE",
    "gpt-reward": "fmbook.align:REWARD_RECIPE",
    "draft-bigram": "fmbook.speculative:BIGRAM_RECIPE",
    "draft-tiny": "fmbook.speculative:TINY_RECIPE",
    "draft-small": "fmbook.speculative:SMALL_RECIPE",
}


def register(
    name: str,
    *,
    config: Callable[[], dict],
    build: Callable[[dict], torch.nn.Module],
    train: Callable[[torch.nn.Module, dict], object],
    description: str = "",
) -> Recipe:
    """Register (or replace) the recipe ``name``."""
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise ValueError(
            "zoo.register: name must be a non-empty string without '/', '\\' or spaces, "
            f"got {name!r}"
        )
    for arg, fn in (("config", config), ("build", build), ("train", train)):
        if not callable(fn):
            raise TypeError(
                f"zoo.register({name!r}): {arg} must be callable, got {type(fn).__name__}"
            )
    recipe = Recipe(name, config, build, train, description)
    _RECIPES[name] = recipe
    return recipe


def available() -> list[str]:
    """Names of every known recipe."""
    return sorted(set(_RECIPES) | set(_BUILTIN))


def recipe(name: str) -> Recipe:
    if name not in _RECIPES and name in _BUILTIN:
        module, attribute = _BUILTIN[name].split(":")
        _RECIPES[name] = getattr(importlib.import_module(module), attribute)
    if name not in _RECIPES:
        known = ", ".join(available()) or "none registered"
        raise KeyError(f"zoo: unknown model {name!r}; known models: {known}")
    return _RECIPES[name]


def cache_dir() -> Path:
    """``FMBOOK_CACHE`` if set, else ``$XDG_CACHE_HOME/fmbook`` (default ``~/.cache/fmbook``)."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "fmbook"


def path(name: str, budget_name: str | None = None) -> Path:
    """The cache file of model ``name`` at a budget (default: the current one)."""
    return cache_dir() / "zoo" / f"{name}-{budget_name or budget.name()}.fmz"


def save(file: Path, payload: dict) -> None:
    """Write ``payload`` with its sha256 header, atomically (temp file + rename)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    header = MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n"
    write_atomic(file, header + body)


class CorruptCacheError(ValueError):
    """A cache file that is truncated, altered or not a zoo file."""


def read(file: Path) -> dict:
    """Read and verify a cache file; raise :class:`CorruptCacheError` if it is damaged."""
    data = Path(file).read_bytes()
    newline = data.find(b"\n")
    if not data.startswith(MAGIC) or newline < 0:
        raise CorruptCacheError(f"{file}: not an fmbook zoo file (bad header)")
    expected = data[len(MAGIC) : newline].decode("ascii", "replace")
    body = data[newline + 1 :]
    actual = hashlib.sha256(body).hexdigest()
    if actual != expected:
        raise CorruptCacheError(f"{file}: sha256 mismatch (file truncated or altered)")
    try:
        return torch.load(io.BytesIO(body), weights_only=True, map_location="cpu")
    except Exception as err:  # verified bytes that still fail to unpickle
        raise CorruptCacheError(f"{file}: cannot be read ({err})") from err


def load(
    name: str,
    *,
    retrain: bool = False,
    device: torch.device | str | None = None,
    with_meta: bool = False,
    quiet: bool = False,
):
    """Model ``name`` trained at the current budget, from the cache or trained now.

    The model comes back in eval mode on ``device`` (default :func:`fmbook.device`).
    ``with_meta=True`` returns ``(model, meta)``, where ``meta`` is the dict
    that the recipe's ``train`` returned (its loss history, say), saved with
    the weights, plus ``"cached"``: whether the model came from the cache.
    Unless ``quiet``, one line says which it was (see :func:`describe`).

    The model is built and trained under :func:`fmbook.runtime.seeded` with the config's
    ``"seed"`` (default 0): it comes out the same whichever notebook trains it first, and
    the caller's random state afterwards is the same whether the model was trained now or
    read from the cache.
    """
    r = recipe(name)
    config = r.config()
    file = path(name)
    model, meta = None, {}
    if file.exists() and not retrain:
        try:
            payload = read(file)
            if payload.get("config") != config:
                warnings.warn(
                    f"zoo: {file.name} was trained with another config; retraining", stacklevel=2
                )
            else:
                with seeded(config.get("seed", 0)):
                    model = r.build(config)
                model.load_state_dict(payload["state_dict"])
                meta = dict(payload.get("meta") or {}, cached=True)
        except CorruptCacheError as err:
            warnings.warn(f"zoo: ignoring the damaged cache file ({err}); retraining", stacklevel=2)
            file.unlink(missing_ok=True)
    target = torch.device(device) if device is not None else default_device()
    if model is None:
        with seeded(config.get("seed", 0)):  # the same model whoever trains it first
            model = r.build(config).to(target)
            meta = r.train(model, config) or {}
        if not isinstance(meta, dict):
            raise TypeError(f"zoo: the train function of {name!r} must return a dict or None")
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        if parallel.is_main():  # under torchrun every rank holds the same weights; one saves
            save(
                file,
                {
                    "name": name,
                    "budget": budget.name(),
                    "config": config,
                    "state_dict": state,
                    "meta": meta,
                },
            )
        meta = dict(meta, cached=False)
    model = model.to(target).eval()
    if not quiet and parallel.is_main():
        print(describe(name, meta))
    return (model, meta) if with_meta else model


def describe(name: str, meta: dict) -> str:
    """One line on where a loaded model came from: ``"gpt-shakespeare: trained now (64 s)"``."""
    seconds = meta.get("seconds")
    if meta.get("cached"):
        took = f" (trained in {seconds:.0f} s)" if seconds is not None else ""
        return f"{name}, {budget.name()} budget: from the cache{took}"
    took = f" in {seconds:.0f} s" if seconds is not None else ""
    return f"{name}, {budget.name()} budget: trained now{took}"
