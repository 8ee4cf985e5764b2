r"""Sampling the next token: temperature, top-k and nucleus (top-p) sampling.

A language model gives logits :math:`z` over the vocabulary; the next token is drawn from

.. math:: p = \mathrm{softmax}(z / \tau),

where the temperature :math:`\tau > 0` sharpens (:math:`\tau < 1`) or flattens (:math:`\tau > 1`)
the distribution. Top-k keeps the :math:`k` most likely tokens; top-p keeps the smallest set of
most likely tokens whose probabilities sum to at least :math:`p` (Holtzman et al. 2020).

The division is done as :math:`(z - \max_j z_j) / \tau`, which gives the same distribution (a
softmax does not change when a constant is subtracted from every logit) but cannot overflow: the
largest logit becomes exactly 0 and the others :math:`\le 0`, so every temperature that is a
positive float32 number samples, and a tiny one samples greedily instead of producing ``inf`` and
``nan``. Probabilities are computed in float32 at least, whatever the model's dtype.

Every door to sampling (:meth:`fmbook.transformer.GPT.generate` and ``stream``,
:mod:`fmbook.speculative`, the server of :mod:`fmbook.server`) checks its arguments here, so that a
request that cannot be sampled is refused before the first token, with a message that says why.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from fmbook.runtime import draw_device

__all__ = [
    "MIN_TEMPERATURE",
    "MAX_TEMPERATURE",
    "check_temperature",
    "check_top_k",
    "check_top_p",
    "probabilities",
    "sample",
]

# The temperatures that float32 holds as normal numbers: a smaller one would round to zero, or
# lose precision, once the logits are divided by it in float32; a larger one would overflow.
MIN_TEMPERATURE = float(torch.finfo(torch.float32).tiny)
MAX_TEMPERATURE = float(torch.finfo(torch.float32).max)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_temperature(temperature, name: str = "sample") -> float:
    """``temperature`` as a float, if it is a real number in [MIN_TEMPERATURE, MAX_TEMPERATURE]
    (float32's normal range, about 1.2e-38 to 3.4e38); ``ValueError`` otherwise."""
    if not _is_real(temperature):
        raise ValueError(
            f"{name}: temperature must be a real number > 0, got {type(temperature).__name__} "
            f"{temperature!r}"
        )
    value = float(temperature)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: temperature must be > 0 and finite, got {temperature!r}")
    if not MIN_TEMPERATURE <= value <= MAX_TEMPERATURE:
        raise ValueError(
            f"{name}: temperature must be between {MIN_TEMPERATURE:.3g} and "
            f"{MAX_TEMPERATURE:.3g} (float32's normal numbers), got {temperature!r}"
        )
    return value


def check_top_k(top_k, name: str = "sample") -> int | None:
    """``top_k`` if it is ``None`` or an int >= 1; ``ValueError`` otherwise."""
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
        raise ValueError(f"{name}: top_k must be >= 1 (or None), got {top_k!r}")
    return int(top_k)


def check_top_p(top_p, name: str = "sample") -> float | None:
    """``top_p`` if it is ``None`` or a real number in (0, 1]; ``ValueError`` otherwise."""
    if top_p is None:
        return None
    if not _is_real(top_p) or not 0 < float(top_p) <= 1:
        raise ValueError(f"{name}: top_p must be in (0, 1] (or None), got {top_p!r}")
    return float(top_p)


def probabilities(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    r"""The sampling distribution over the last dimension of ``logits``:
    :math:`\mathrm{softmax}((z - \max z) / \tau)`, then cut to the ``top_k`` most likely tokens
    and to the nucleus of mass ``top_p``, and renormalised (in float32 or wider)."""
    temperature = check_temperature(temperature, "probabilities")
    top_k, top_p = check_top_k(top_k, "probabilities"), check_top_p(top_p, "probabilities")
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    z = (z - z.amax(dim=-1, keepdim=True)) / temperature
    if top_k is not None:
        kth = torch.topk(z, min(top_k, z.size(-1))).values[..., [-1]]
        z = z.masked_fill(z < kth, float("-inf"))
    probs = F.softmax(z, dim=-1)
    if top_p is not None:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # drop a token if the tokens before it already reach top_p (the first one always stays)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return probs


def sample(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row of ``logits`` ``(B, V)``, drawn from :func:`probabilities`: ``(B, 1)``
    on the logits' device. The draw happens where ``generator`` lives, so a CPU generator gives
    the same tokens on every device."""
    probs = probabilities(logits, temperature, top_k, top_p)
    where = draw_device(generator, probs.device)
    return torch.multinomial(probs.to(where), 1, generator=generator).to(probs.device)
