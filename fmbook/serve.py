r"""What serving a language model costs, and the techniques that cut the cost.

The serving chapter (``book/06_serving``) measures the book's GPT as a server would run it.

**The KV cache.** Generating with a cache (:class:`fmbook.transformer.KVCache`) keeps, for every
position of every sequence in a batch, one key and one value vector of width :math:`d` in each of
the :math:`L` layers. At :math:`b` bytes per number, a batch of :math:`B` sequences of :math:`T`
positions holds

.. math:: M = 2 \cdot L \cdot d \cdot b \cdot T \cdot B \ \text{bytes}

(:func:`kv_cache_bytes`); :func:`cache_nbytes` weighs the tensors of a real cache and
:func:`cache_storage_bytes` the memory the process holds behind them.

**Batching.** A server that answers requests one at a time leaves most of a matrix product's work
undone: one step of a batch of :math:`B` sequences costs far less than :math:`B` steps of one.
:func:`simulate_static` and :func:`simulate_continuous` replay a stream of requests through a
server that generates for up to ``max_batch`` of them together, given the seconds one step takes
for each batch size, and return every request's latency (waiting plus generating): the first
keeps a batch together until its longest request is done, the second lets requests join and
leave between steps (iteration-level scheduling, Yu et al. 2022).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fmbook.runtime import synchronize
from fmbook.transformer import KVCache

__all__ = [
    "kv_cache_bytes",
    "cache_nbytes",
    "cache_storage_bytes",
    "forward_flops",
    "fill_cache",
    "seconds_per_token",
    "poisson_arrivals",
    "simulate_static",
    "simulate_continuous",
]


def kv_cache_bytes(
    n_layer: int, n_embd: int, context: int, batch: int = 1, bytes_per_value: int = 4
) -> int:
    r""":math:`2 \cdot L \cdot d \cdot b \cdot T \cdot B`: the bytes of the keys and values that a
    cache holds for ``batch`` sequences of ``context`` positions."""
    for name, value in (
        ("n_layer", n_layer),
        ("n_embd", n_embd),
        ("batch", batch),
        ("bytes_per_value", bytes_per_value),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"kv_cache_bytes: {name} must be an int >= 1, got {value!r}")
    if not isinstance(context, int) or context < 0:
        raise ValueError(f"kv_cache_bytes: context must be an int >= 0, got {context!r}")
    return 2 * n_layer * n_embd * bytes_per_value * context * batch


def forward_flops(config, new: int, cached: int = 0, batch: int = 1) -> int:
    r"""FLOPs of the matrix products in one forward pass of :class:`fmbook.transformer.GPT` over
    ``new`` positions that follow ``cached`` ones, for ``batch`` sequences (2 FLOPs per
    multiply-add).

    Per position, the weights cost :math:`2 (12 L d^2 + d V)`: in every layer :math:`4 d^2` for
    the query, key, value and output projections and :math:`8 d^2` for the MLP, then :math:`d V`
    for the output layer. The attention of every new query against all :math:`T = ` ``cached +
    new`` keys costs :math:`4 L d \, T` (scores, then the weighted sum of values), masked keys
    included, as the attention kernel computes them. Elementwise work (normalisation, softmax,
    activations) is not counted.
    """
    d, n_layer, vocab = config.n_embd, config.n_layer, config.vocab_size
    if new < 1 or cached < 0 or batch < 1:
        raise ValueError(
            f"forward_flops: expected new >= 1, cached >= 0, batch >= 1, got {new}, {cached}, "
            f"{batch}"
        )
    weights = 2 * (12 * n_layer * d * d + d * vocab) * new
    attention = 4 * n_layer * d * new * (cached + new)
    return batch * (weights + attention)


def cache_nbytes(cache: KVCache) -> int:
    """The bytes that the tensors of ``cache`` occupy: every layer's keys and values."""
    if not isinstance(cache, KVCache):
        raise TypeError(f"cache_nbytes: expected a KVCache, got {type(cache).__name__}")
    return sum(
        t.element_size() * t.nelement() for pair in cache.layers if pair is not None for t in pair
    )


def cache_storage_bytes(cache: KVCache) -> int:
    """The bytes of memory the process holds for ``cache``: the storage behind each of its
    tensors, whole, and each storage once. A tensor that is a view into a larger one (a slice of
    the fused query/key/value output, say) keeps all of that storage alive, so this can exceed
    :func:`cache_nbytes`; for a cache of :class:`~fmbook.transformer.KVCache` the two are equal."""
    if not isinstance(cache, KVCache):
        raise TypeError(f"cache_storage_bytes: expected a KVCache, got {type(cache).__name__}")
    storages = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
        for pair in cache.layers
        if pair is not None
        for t in pair
    }
    return sum(storages.values())


@torch.no_grad()
def fill_cache(model: nn.Module, idx: torch.Tensor) -> KVCache:
    """A cache holding the keys and values of the token ids ``idx`` ``(B, T)``, as generation
    leaves it after reading a prompt of ``T`` tokens."""
    if idx.ndim != 2 or idx.shape[1] < 1:
        raise ValueError(
            f"fill_cache: expected token ids (B, T) with T >= 1, got {tuple(idx.shape)}"
        )
    cache = KVCache(model.config.n_layer)
    model(idx, cache=cache)
    return cache


@torch.no_grad()
def seconds_per_token(
    model: nn.Module, idx: torch.Tensor, *, use_cache: bool, repeats: int = 5
) -> float:
    """Seconds to compute the next token's logits after the context ``idx`` ``(B, T)``: the median
    of ``repeats`` timings.

    With the cache, only the newest position runs through the model, reading the cached keys and
    values of the ``T - 1`` before it (filled beforehand and not timed); without it, all ``T``
    positions are computed again, as generation without a cache does at every step.
    """
    if idx.ndim != 2 or idx.shape[1] < 2:
        raise ValueError(
            f"seconds_per_token: expected token ids (B, T) with T >= 2, got {tuple(idx.shape)}"
        )
    if repeats < 1:
        raise ValueError(f"seconds_per_token: repeats must be >= 1, got {repeats}")
    times = []
    for _ in range(repeats + 1):  # the first run warms up and is not counted
        cache = fill_cache(model, idx[:, :-1]) if use_cache else None
        synchronize(idx.device)
        start = time.perf_counter()
        model(idx[:, -1:], cache=cache) if use_cache else model(idx)
        synchronize(idx.device)  # a GPU runs asynchronously: wait for the step to finish
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def poisson_arrivals(rate: float, n: int, seed: int = 0) -> np.ndarray:
    """Arrival times (seconds) of ``n`` requests at ``rate`` per second on average: gaps drawn
    independently from the exponential distribution with mean ``1 / rate``."""
    if not rate > 0:
        raise ValueError(f"poisson_arrivals: rate must be > 0, got {rate!r}")
    if n < 1:
        raise ValueError(f"poisson_arrivals: n must be >= 1, got {n}")
    return np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, size=n))


def _check_stream(name: str, arrivals, tokens, max_batch: int):
    arrivals = np.asarray(arrivals, dtype=float)
    tokens = np.asarray(tokens)
    if arrivals.ndim != 1 or len(arrivals) == 0 or np.any(np.diff(arrivals) < 0):
        raise ValueError(f"{name}: arrivals must be a non-empty, sorted 1-D sequence")
    if tokens.shape != arrivals.shape or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(
            f"{name}: tokens must hold one int per request, got shape {tokens.shape} "
            f"for {len(arrivals)} requests"
        )
    if np.any(tokens < 1):
        raise ValueError(f"{name}: every request must ask for at least 1 token")
    if max_batch < 1:
        raise ValueError(f"{name}: max_batch must be >= 1, got {max_batch}")
    return arrivals, tokens


def _step(name: str, step_seconds: Callable[[int], float], size: int) -> float:
    seconds = step_seconds(size)
    if not seconds > 0:
        raise ValueError(f"{name}: step_seconds({size}) must be > 0, got {seconds}")
    return seconds


def simulate_static(
    arrivals: Sequence[float],
    tokens: Sequence[int],
    step_seconds: Callable[[int], float],
    max_batch: int,
) -> np.ndarray:
    """Every request's latency (its last token's time minus its arrival) under request-level
    batching.

    Whenever the server is free and requests wait, it takes the oldest ``min(waiting,
    max_batch)`` of them and generates for them together, one token each per step of
    ``step_seconds(size)`` seconds, until the longest of them is done; a request is done after
    its own ``tokens`` steps, but the next batch starts only when the whole batch is done.
    With ``max_batch = 1`` the server answers one request at a time.
    """
    arrivals, tokens = _check_stream("simulate_static", arrivals, tokens, max_batch)
    finish = np.empty_like(arrivals)
    free_at, first = 0.0, 0
    while first < len(arrivals):
        start = max(free_at, arrivals[first])
        size = min(int(np.searchsorted(arrivals, start, side="right")) - first, max_batch)
        batch = slice(first, first + size)
        step = _step("simulate_static", step_seconds, size)
        finish[batch] = start + step * tokens[batch]
        free_at = start + step * tokens[batch].max()
        first += size
    return finish - arrivals


def simulate_continuous(
    arrivals: Sequence[float],
    tokens: Sequence[int],
    step_seconds: Callable[[int], float],
    max_batch: int,
) -> np.ndarray:
    """Every request's latency under iteration-level scheduling (continuous batching).

    The server decides again before every step: requests that have arrived join the running
    batch while it holds fewer than ``max_batch``, one step of ``step_seconds(size)`` seconds
    gives every running request one token, and a request leaves as soon as it has its
    ``tokens``, freeing its place for the next step.
    """
    arrivals, tokens = _check_stream("simulate_continuous", arrivals, tokens, max_batch)
    finish = np.empty_like(arrivals)
    left = tokens.astype(np.int64).copy()
    running: list[int] = []
    now, next_request = 0.0, 0
    while next_request < len(arrivals) or running:
        if not running and arrivals[next_request] > now:
            now = arrivals[next_request]  # idle until the next request arrives
        while (
            next_request < len(arrivals)
            and arrivals[next_request] <= now
            and len(running) < max_batch
        ):
            running.append(next_request)
            next_request += 1
        now += _step("simulate_continuous", step_seconds, len(running))
        for i in running:
            left[i] -= 1
            if left[i] == 0:
                finish[i] = now
        running = [i for i in running if left[i] > 0]
    return finish - arrivals
