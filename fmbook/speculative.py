r"""Speculative decoding: sample from a large model with the help of a small one, exactly.

The serving chapter's third notebook (``book/06_serving/3_speculative_decoding``) builds it.

A cheap *draft* model :math:`q` proposes :math:`k` tokens one after the other; the *target*
model :math:`p` scores all :math:`k + 1` next-token distributions at once, in one forward pass
over the proposals (:func:`generate`). Modified rejection sampling (:func:`accept_reject`;
Leviathan, Kalman & Matias 2023, Algorithm 1; Chen et al. 2023) keeps the draft token
:math:`x_i` with probability

.. math:: \min\!\left(1, \frac{p_i(x_i)}{q_i(x_i)}\right);

at the first rejection it samples a replacement from the residual
:math:`\mathrm{norm}(\max(0, p_i - q_i))` (:func:`residual`), and if all :math:`k` proposals
are kept it samples one more token from :math:`p_{k+1}`. Every round emits between 1 and
:math:`k + 1` tokens, distributed exactly as if the target had sampled them one by one
(:func:`emitted_distribution` enumerates every path to show it).

With a per-token acceptance rate :math:`\alpha` (taken as the same at every position), a round
emits on average (Leviathan et al., equation 1)

.. math:: E = \frac{1 - \alpha^{k+1}}{1 - \alpha}

tokens (:func:`expected_tokens`), and with a draft step costing :math:`c` target steps the
wall time improves by :math:`E / (k c + 1)` (their Theorem 3.8; :func:`expected_speedup`).

The drafts of the notebook are zoo models trained on the same Shakespeare characters as
``gpt-shakespeare``: ``draft-bigram`` (a :class:`Bigram` table), ``draft-tiny`` (a one-layer
GPT) and ``draft-small`` (two layers at the full budget); see :data:`DRAFT_RECIPES`.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from fmbook import sampling, zoo
from fmbook.budget import pick
from fmbook.data import random_windows
from fmbook.lm import char_data, eval_windows
from fmbook.objectives import next_token_loss
from fmbook.runtime import draw_device, synchronize
from fmbook.train import adamw, fit
from fmbook.transformer import GPT, GPTConfig, KVCache

__all__ = [
    "crop_cache",
    "probabilities",
    "residual",
    "accept_reject",
    "emitted_distribution",
    "sequence_distribution",
    "expected_tokens",
    "expected_speedup",
    "Rounds",
    "generate",
    "chi_square",
    "wall_time",
    "forward_seconds",
    "Bigram",
    "DRAFT_RECIPES",
]


def crop_cache(cache: KVCache, length: int) -> KVCache:
    """Keep the first ``length`` positions of every layer's keys and values; return ``cache``.

    A :class:`~fmbook.transformer.KVCache` stores, per layer, keys and values of shape
    ``(B, heads, T, d_head)``; positions run along dimension ``-2``. Speculative decoding crops
    both caches after each round, so that they hold only the accepted tokens.
    """
    if not isinstance(cache, KVCache):
        raise TypeError(f"crop_cache: expected a KVCache, got {type(cache).__name__}")
    if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= cache.length:
        raise ValueError(
            f"crop_cache: length must be an int in [0, {cache.length}] (the cached positions), "
            f"got {length!r}"
        )
    cache.layers = [
        None if pair is None else (pair[0][..., :length, :], pair[1][..., :length, :])
        for pair in cache.layers
    ]
    return cache


def probabilities(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    r"""The sampling distribution :math:`\mathrm{softmax}(z / \tau)` over the last dimension, in
    float32 (:func:`fmbook.sampling.probabilities`, computed without overflow)."""
    return sampling.probabilities(logits, temperature)


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    r"""The distribution a rejected draft token is replaced from:
    :math:`\mathrm{norm}(\max(0, p - q))`, over the last dimension.

    Where :math:`p \le q` everywhere (so :math:`p = q`), a rejection has probability 0 and the
    row is returned as :math:`p`.
    """
    if p.shape != q.shape:
        raise ValueError(
            f"residual: p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}"
        )
    excess = (p - q).clamp(min=0)
    total = excess.sum(-1, keepdim=True)
    return torch.where(total > 0, excess / total.clamp(min=torch.finfo(p.dtype).tiny), p)


def accept_reject(
    p: torch.Tensor,
    q: torch.Tensor,
    drafts: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Modified rejection sampling for ``B`` sequences: ``(n, t)``, each of shape ``(B,)``.

    ``p`` ``(B, k + 1, V)`` holds the target's distributions at the :math:`k + 1` positions
    after the context, ``q`` ``(B, k, V)`` the draft's at the first :math:`k`, ``drafts``
    ``(B, k)`` the draft's tokens. With uniforms :math:`r_1, \dots, r_k`, draft token
    :math:`x_i` is accepted when :math:`r_i < p_i(x_i) / q_i(x_i)`; ``n`` counts the accepted
    tokens before the first rejection, and ``t`` is one more token, sampled from
    :func:`residual` :math:`(p_{n+1}, q_{n+1})` if :math:`n < k`, else from :math:`p_{k+1}`.
    The sequence continues with ``drafts[:n]`` and ``t`` (Leviathan et al. 2023, Algorithm 1).

    Random numbers are drawn on ``generator``'s device (the uniforms first, then ``t``).
    """
    if p.ndim != 3 or q.ndim != 3 or drafts.ndim != 2:
        raise ValueError(
            "accept_reject: expected p (B, k + 1, V), q (B, k, V) and drafts (B, k), got "
            f"{tuple(p.shape)}, {tuple(q.shape)} and {tuple(drafts.shape)}"
        )
    B, k = drafts.shape
    if p.shape[:2] != (B, k + 1) or q.shape != (B, k, p.shape[2]):
        raise ValueError(
            f"accept_reject: for drafts (B={B}, k={k}), expected p ({B}, {k + 1}, V) and "
            f"q ({B}, {k}, V), got {tuple(p.shape)} and {tuple(q.shape)}"
        )
    if drafts.dtype != torch.long:
        raise TypeError(f"accept_reject: drafts must be torch.long, got {drafts.dtype}")
    home = p.device
    where = draw_device(generator, home)
    p, q, drafts = p.to(where), q.to(where), drafts.to(where)
    r = torch.rand(B, k, generator=generator, device=where)
    p_x = p[:, :k].gather(-1, drafts[..., None])[..., 0]
    q_x = q.gather(-1, drafts[..., None])[..., 0]
    accepted = r * q_x < p_x  # r < p(x) / q(x), without dividing by q(x)
    n = accepted.long().cumprod(-1).sum(-1)
    rows = torch.arange(B, device=where)
    last = p[rows, n]  # p_{n+1}
    if k:
        q_next = q[rows, n.clamp(max=k - 1)]
        last = torch.where((n < k)[:, None], residual(last, q_next), last)
    t = torch.multinomial(last, 1, generator=generator)[:, 0]
    return n.to(home), t.to(home)


def _check_table(name: str, probs: torch.Tensor, vocab: int | None) -> torch.Tensor:
    probs = torch.as_tensor(probs, dtype=torch.float64)
    if probs.ndim != 1 or (vocab is not None and len(probs) != vocab):
        raise ValueError(
            f"emitted_distribution: {name} must return a vector of {vocab or 'V'} probabilities, "
            f"got shape {tuple(probs.shape)}"
        )
    if probs.min() < 0 or abs(float(probs.sum()) - 1) > 1e-6:
        raise ValueError(f"emitted_distribution: {name} must return a distribution (>= 0, sum 1)")
    return probs


def emitted_distribution(
    target: Callable[[tuple], torch.Tensor],
    draft: Callable[[tuple], torch.Tensor],
    k: int,
    m: int,
    context: tuple = (),
) -> torch.Tensor:
    r"""The exact distribution of the first ``m`` tokens that speculative decoding emits after
    ``context``, with ``k`` draft tokens per round: a tensor of shape ``(V,) * m``.

    ``target(ctx)`` and ``draft(ctx)`` return the next-token distributions :math:`p(\cdot \mid
    ctx)` and :math:`q(\cdot \mid ctx)` for a tuple of token ids. Every path of a round is
    enumerated: each of the :math:`V^k` proposals with its probability :math:`\prod_i q_i(x_i)`,
    each number :math:`n` of accepted tokens with its probability :math:`\prod_{i \le n}
    a_i \cdot (1 - a_{n+1})`, :math:`a_i = \min(1, p_i(x_i) / q_i(x_i))`, and each extra token
    from :func:`residual` or :math:`p_{k+1}`; rounds follow until ``m`` tokens are out.
    Probabilities are computed in float64 and each context is evaluated once.
    """
    for name, value in (("k", k), ("m", m)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"emitted_distribution: {name} must be an int >= 1, got {value!r}")
    first = _check_table("target", target(tuple(context)), None)
    V = len(first)

    @functools.cache
    def p(ctx):
        return _check_table("target", target(ctx), V)

    @functools.cache
    def q(ctx):
        return _check_table("draft", draft(ctx), V)

    @functools.cache
    def emitted(ctx, m):
        out = torch.zeros((V,) * m, dtype=torch.float64)
        for xs in itertools.product(range(V), repeat=k):
            ctxs = [ctx + xs[:i] for i in range(k + 1)]
            reach = float(torch.prod(torch.stack([q(c)[x] for c, x in zip(ctxs, xs)])))
            for n in range(k + 1):  # n draft tokens accepted, then one more token
                if reach == 0:
                    break
                if n < k:
                    a = min(1.0, float(p(ctxs[n])[xs[n]] / q(ctxs[n])[xs[n]]))
                    weight, last = reach * (1 - a), residual(p(ctxs[n]), q(ctxs[n]))
                else:
                    a, weight, last = 0.0, reach, p(ctxs[k])
                for t in range(V):
                    out_tokens = xs[:n] + (t,)
                    w = weight * float(last[t])
                    if w == 0:
                        continue
                    if len(out_tokens) >= m:
                        out[out_tokens[:m]] += w
                    else:
                        more = emitted(ctx + out_tokens, m - len(out_tokens))
                        out[out_tokens] += w * more
                reach *= a
        return out

    return emitted(tuple(context), m)


def sequence_distribution(
    target: Callable[[tuple], torch.Tensor], m: int, context: tuple = ()
) -> torch.Tensor:
    r"""The target's own distribution of its next ``m`` tokens after ``context``:
    :math:`p(x_1, \dots, x_m) = \prod_i p(x_i \mid \text{context}, x_{<i})`, shape ``(V,) * m``."""
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"sequence_distribution: m must be an int >= 1, got {m!r}")
    first = _check_table("target", target(tuple(context)), None)
    if m == 1:
        return first
    rest = [sequence_distribution(target, m - 1, tuple(context) + (x,)) for x in range(len(first))]
    return first.view(-1, *([1] * (m - 1))) * torch.stack(rest)


def expected_tokens(alpha, k: int):
    r"""Tokens emitted per round (per target pass) on average:
    :math:`E = (1 - \alpha^{k+1}) / (1 - \alpha) = 1 + \alpha + \dots + \alpha^k`.

    Leviathan et al. (2023), equation 1, assuming every draft token is accepted with the same
    probability :math:`\alpha`, independently. ``alpha`` may be a float or a tensor.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"expected_tokens: k must be an int >= 0, got {k!r}")
    alpha_t = torch.as_tensor(alpha, dtype=torch.float64)
    if torch.any((alpha_t < 0) | (alpha_t > 1)):
        raise ValueError(f"expected_tokens: alpha must lie in [0, 1], got {alpha!r}")
    out = sum(alpha_t**i for i in range(k + 1))  # the geometric sum, exact also at alpha = 1
    return float(out) if out.ndim == 0 else out


def expected_speedup(alpha, k: int, c: float):
    r"""Leviathan et al.'s expected improvement in wall time (Theorem 3.8):
    :math:`\frac{1 - \alpha^{k+1}}{(1 - \alpha)(k c + 1)}`, with :math:`c` the time of a draft
    step over that of a target step, and a target pass over :math:`k + 1` positions assumed to
    cost as much as a pass over one."""
    if not c >= 0:
        raise ValueError(f"expected_speedup: c must be >= 0, got {c!r}")
    return expected_tokens(alpha, k) / (k * c + 1)


@dataclass
class Rounds:
    """What :func:`generate` did: ``k`` draft tokens per round, ``accepted[j]`` of them accepted
    in round ``j`` (one target pass each)."""

    k: int
    accepted: list[int] = field(default_factory=list)

    @classmethod
    def pool(cls, many: list[Rounds]) -> Rounds:
        """The rounds of several generations with the same ``k``, together."""
        if not many or len({r.k for r in many}) != 1:
            raise ValueError("Rounds.pool: expected a non-empty list of Rounds with the same k")
        return cls(many[0].k, [n for r in many for n in r.accepted])

    @property
    def passes(self) -> int:
        """Target forward passes, one per round."""
        return len(self.accepted)

    @property
    def examined(self) -> int:
        """Draft tokens the rule looked at: the accepted ones and, in each round that stopped
        early, the rejected one."""
        return sum(min(n + 1, self.k) for n in self.accepted)

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft tokens over examined ones: the measured :math:`\\alpha`."""
        return sum(self.accepted) / self.examined

    @property
    def tokens_per_pass(self) -> float:
        """Tokens emitted per round, :math:`n + 1` on average (before the final cut)."""
        return sum(self.accepted) / self.passes + 1


def _last_logits(model, ids, cache, use_cache, last):
    """The logits of the last ``last`` positions of ``ids``, feeding only what ``cache`` lacks."""
    if use_cache and cache is not None:
        return model(ids[:, cache.length :], cache=cache)[0][:, -last:]
    return model(ids)[0][:, -last:]


def _sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    where = draw_device(generator, probs.device)
    return torch.multinomial(probs.to(where), 1, generator=generator).to(probs.device)


def _check_generate(target, draft, idx, max_new_tokens, k, rule, temperature, generator):
    if not isinstance(target, GPT):
        raise TypeError(f"generate: target must be an fmbook GPT, got {type(target).__name__}")
    if not isinstance(draft, nn.Module):
        raise TypeError(f"generate: draft must be an nn.Module, got {type(draft).__name__}")
    if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or idx.shape[0] != 1 or idx.shape[1] < 1:
        got = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"generate: idx must be one prompt of shape (1, T >= 1), got {got}")
    for name, value, low in (("max_new_tokens", max_new_tokens, 0), ("k", k, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"generate: {name} must be an int >= {low}, got {value!r}")
    if not callable(rule):
        raise TypeError(f"generate: rule must be callable, got {type(rule).__name__}")
    sampling.check_temperature(temperature, "generate")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generate: generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    longest = idx.shape[1] + max_new_tokens - 1 + k
    for name, model in (("target", target), ("draft", draft)):
        block = getattr(getattr(model, "config", None), "block_size", None)
        if block is not None and max_new_tokens and longest > block:
            raise ValueError(
                f"generate: prompt ({idx.shape[1]}) + max_new_tokens ({max_new_tokens}) - 1 + "
                f"k ({k}) = {longest} positions exceed the {name}'s block_size={block}"
            )


@torch.no_grad()
def generate(
    target: GPT,
    draft: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    k: int,
    *,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    rule: Callable = accept_reject,
) -> tuple[torch.Tensor, Rounds]:
    r"""Append ``max_new_tokens`` tokens to the prompt ``idx`` ``(1, T)`` by speculative decoding;
    return the sequence and the :class:`Rounds`.

    Each round the ``draft`` samples ``k`` tokens one at a time from
    :math:`q = \mathrm{softmax}(z / \tau)`, the ``target`` scores the :math:`k + 1` positions
    after the sequence in one forward pass, and ``rule(p, q, drafts, generator)`` (default
    :func:`accept_reject`) keeps ``n`` draft tokens and adds one of its own. With ``use_cache``
    each fmbook GPT keeps a :class:`~fmbook.transformer.KVCache`, cropped (:func:`crop_cache`)
    after the round to the accepted tokens; another draft (a :class:`Bigram`) reads the whole
    sequence each step. The last round's extra tokens are cut off. The whole sequence, with
    ``k`` proposals beyond it, must fit in each GPT's ``block_size``.
    """
    _check_generate(target, draft, idx, max_new_tokens, k, rule, temperature, generator)
    probs = functools.partial(probabilities, temperature=temperature)
    states = [(m, m.training) for m in (target, draft)]
    target.eval(), draft.eval()
    cached = isinstance(draft, GPT) and use_cache
    target_cache = KVCache(target.config.n_layer) if use_cache else None
    draft_cache = KVCache(draft.config.n_layer) if cached else None
    rounds, seq, end = Rounds(k), idx, idx.shape[1] + max_new_tokens
    while seq.shape[1] < end:
        ctx, qs = seq, []
        for _ in range(k):  # the draft proposes k tokens, one after the other
            qs.append(probs(_last_logits(draft, ctx, draft_cache, cached, 1)[:, -1]))
            ctx = torch.cat([ctx, _sample(qs[-1], generator)], dim=1)
        p = probs(_last_logits(target, ctx, target_cache, use_cache, k + 1))  # one pass
        drafts = ctx[:, seq.shape[1] :]
        n, t = rule(p, torch.stack(qs, dim=1), drafts, generator)
        n = int(n[0])
        seq = torch.cat([seq, drafts[:, :n], t.view(1, 1).to(seq)], dim=1)
        rounds.accepted.append(n)
        for cache in (target_cache, draft_cache):  # keep what the next round builds on
            if cache is not None:
                crop_cache(cache, min(cache.length, seq.shape[1] - 1))
    for model, was_training in states:
        model.train(was_training)
    return seq[:, :end], rounds


def wall_time(fn: Callable[[], object], device: torch.device | str) -> tuple[object, float]:
    """``(fn(), seconds)``: the wall time of one call, waiting for a GPU to finish its work before
    reading the clock on both sides."""
    device = torch.device(device)
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


@torch.no_grad()
def forward_seconds(model: nn.Module, idx: torch.Tensor, new: int = 1, repeats: int = 5) -> float:
    """Seconds of one forward pass as :func:`generate` runs it: the median of ``repeats``.

    An fmbook GPT reads the last ``new`` positions of ``idx`` ``(B, T)`` after a
    :class:`~fmbook.transformer.KVCache` filled with the ``T - new`` before them (filled
    beforehand, not timed); another model (a :class:`Bigram`) reads all of ``idx``.
    """
    if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or not 1 <= new < idx.shape[1]:
        got = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"forward_seconds: expected idx (B, T) and 1 <= new < T, got {got}, {new}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"forward_seconds: repeats must be an int >= 1, got {repeats!r}")
    times = []
    for _ in range(repeats + 1):  # the first run warms up and is not counted
        if isinstance(model, GPT):
            cache = KVCache(model.config.n_layer)
            model(idx[:, :-new], cache=cache)
            step = functools.partial(model, idx[:, -new:], cache=cache)
            _, seconds = wall_time(step, idx.device)
        else:
            _, seconds = wall_time(lambda: model(idx), idx.device)
        times.append(seconds)
    return float(torch.tensor(times[1:]).median())


def chi_square(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0):
    r"""Pearson's goodness-of-fit test of observed ``counts`` against cell probabilities ``probs``
    (any shape, flattened): ``(statistic, degrees of freedom, p-value)``.

    Cells whose expected count :math:`N \pi_j` is below ``min_expected`` are pooled into one, so
    that :math:`X^2 = \sum_j (O_j - N \pi_j)^2 / (N \pi_j)` is close to its large-sample null
    distribution, :math:`\chi^2` with (cells - 1) degrees of freedom; the p-value is its upper
    tail, :math:`Q(\mathrm{df}/2, X^2/2)` (the regularized upper incomplete gamma function).
    """
    counts = torch.as_tensor(counts, dtype=torch.float64).flatten().cpu()
    probs = torch.as_tensor(probs, dtype=torch.float64).flatten().cpu()
    if counts.shape != probs.shape or len(counts) < 2:
        raise ValueError(
            f"chi_square: counts and probs need the same number (>= 2) of cells, got "
            f"{len(counts)} and {len(probs)}"
        )
    if counts.min() < 0 or probs.min() < 0 or abs(float(probs.sum()) - 1) > 1e-6:
        raise ValueError("chi_square: counts must be >= 0 and probs a distribution (sum 1)")
    total = counts.sum()
    expected = total * probs
    small = expected < min_expected
    observed = torch.cat([counts[~small], counts[small].sum().view(1)])
    expected = torch.cat([expected[~small], expected[small].sum().view(1)])
    if not small.any():
        observed, expected = observed[:-1], expected[:-1]
    keep = expected > 0
    if keep.sum() < 2:
        raise ValueError("chi_square: fewer than two cells with an expected count > 0")
    if torch.any(observed[~keep] > 0):
        return float("inf"), int(keep.sum()) - 1, 0.0  # a count where none can fall
    statistic = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    df = int(keep.sum()) - 1
    p_value = torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), statistic / 2)
    return float(statistic), df, float(p_value)


class Bigram(nn.Module):
    r"""The cheapest draft: the next token's logits depend on the last token only,
    :math:`z_{t} = W[x_t]`, one row of a :math:`V \times V` table.

    ``forward(idx, targets=None, cache=None)`` returns ``(logits (B, T, V), loss)`` like
    :class:`~fmbook.transformer.GPT`; there is no cache to keep (``cache`` is ignored).
    """

    def __init__(self, vocab_size: int):
        super().__init__()
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"Bigram: vocab_size must be a positive int, got {vocab_size!r}")
        self.table = nn.Embedding(vocab_size, vocab_size)
        nn.init.zeros_(self.table.weight)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache=None):
        if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or idx.dtype != torch.long:
            raise ValueError("Bigram: idx must be a (batch, time) tensor of dtype torch.long")
        logits = self.table(idx)
        return logits, (next_token_loss(logits, targets) if targets is not None else None)


# -- the drafts, as zoo recipes ---------------------------------------------------------------


def draft_config(size: str, budget: str | None = None) -> dict:
    """The recipe of draft ``size`` (``"bigram"``, ``"tiny"`` or ``"small"``) at ``budget``.

    Trained like ``gpt-shakespeare`` (random windows of the training plays, AdamW, warm-up and
    cosine decay) for far fewer steps; the GPT drafts are narrower and shallower than the
    target at the same budget.
    """
    shared = {
        "vocab_size": char_data().vocab_size,
        "block_size": 64,
        "batch_size": 32,
        "weight_decay": 0.0,
        "seed": 0,
    }
    if size == "bigram":
        return shared | {
            "kind": "bigram",
            "lr": 0.1,
            "steps": pick(test=150, full=400, budget=budget),
        }
    if size not in _GPT_DRAFTS:
        raise ValueError(f"draft_config: size must be 'bigram', 'tiny' or 'small', got {size!r}")
    sizes = {key: pick(test=t, full=f, budget=budget) for key, (t, f) in _GPT_DRAFTS[size].items()}
    return shared | {"kind": "gpt", "dropout": 0.0, "bias": True} | sizes


# The GPT drafts, (test, full) for each setting; gpt-shakespeare is 2 x 64 (test), 3 x 128 (full).
_GPT_DRAFTS = {
    "tiny": {
        "n_layer": (1, 1),
        "n_head": (2, 4),
        "n_embd": (16, 32),
        "lr": (0.012, 0.012),
        "steps": (200, 800),
    },
    "small": {
        "n_layer": (1, 2),
        "n_head": (4, 4),
        "n_embd": (32, 64),
        "lr": (0.012, 0.016),
        "steps": (300, 600),
    },
}


def build_draft(config: dict) -> nn.Module:
    """A fresh draft: a :class:`Bigram` or a GPT of the recipe's sizes."""
    if config["kind"] == "bigram":
        return Bigram(config["vocab_size"])
    names = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout", "bias")
    return GPT(GPTConfig(**{name: config[name] for name in names}))


@torch.no_grad()
def _tuning_loss(model: nn.Module, n: int = 256) -> float:
    x, y = eval_windows(char_data().tune_ids, 64, n)
    device = next(model.parameters()).device
    return float(model(x.to(device), y.to(device))[1])


def train_draft(model: nn.Module, config: dict) -> dict:
    """Next-token loss on random windows of the training plays (fmbook.train.fit)."""
    data, device = char_data(), next(model.parameters()).device
    g = torch.Generator().manual_seed(config["seed"])

    def batches():
        return random_windows(data.train_ids, config["block_size"], config["batch_size"], g, device)

    steps = config["steps"]
    history = fit(
        model,
        lambda net, batch: net(*batch)[1],
        batches,
        adamw(model.parameters(), device, lr=config["lr"], weight_decay=config["weight_decay"]),
        steps,
        eval_fn=_tuning_loss,
        eval_every=max(1, steps // 5),
        warmup=steps // 20,
        schedule="cosine",
        grad_clip=1.0,
        title=f"draft ({config['kind']})",
    )
    return history.curves()


def _recipe(size: str, description: str) -> zoo.Recipe:
    return zoo.register(
        f"draft-{size}",
        config=functools.partial(draft_config, size),
        build=build_draft,
        train=train_draft,
        description=description,
    )


BIGRAM_RECIPE = _recipe("bigram", "bigram table of the training plays' characters")
TINY_RECIPE = _recipe("tiny", "one-layer narrow GPT of the training plays")
SMALL_RECIPE = _recipe("small", "small GPT of the training plays (two layers at full budget)")
DRAFT_RECIPES = {"bigram": BIGRAM_RECIPE, "tiny": TINY_RECIPE, "small": SMALL_RECIPE}
"""The drafts of the speculative-decoding notebook, registered with :mod:`fmbook.zoo` as
``draft-bigram``, ``draft-tiny`` and ``draft-small``."""
