r"""In-context learning of linear functions, after Garg et al. (2022).

A prompt is a sequence of pairs :math:`(x_1, y_1, \dots, x_k, y_k, x_{k+1})` with
:math:`x_i \sim \mathcal{N}(0, I_d)`, :math:`y_i = w^\top x_i` and a fresh
:math:`w \sim \mathcal{N}(0, I_d)` for every prompt. A transformer trained on such prompts
predicts :math:`y_{i}` from the pairs before it: it has to infer :math:`w` from the context,
since no weight of the model holds it. Errors are squared errors divided by :math:`d`
(the variance of :math:`y`), so that predicting 0 scores 1.

The zoo model ``"icl-linear"`` is such a transformer: :func:`icl_config`, :func:`build_icl`,
:func:`train_icl`, gathered in :data:`ICL_RECIPE`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fmbook import budget as budgets
from fmbook.runtime import draw_device, seed
from fmbook.train import fit_cosine
from fmbook.transformer import Block
from fmbook.zoo import Recipe


@dataclass(frozen=True)
class Prompts:
    """A batch of prompts: inputs ``xs`` (B, k, d), outputs ``ys`` (B, k) and the hidden weights
    ``ws`` (B, d)."""

    xs: torch.Tensor
    ys: torch.Tensor
    ws: torch.Tensor


def linear_prompts(
    batch: int, k: int, d: int, generator: torch.Generator, x_scale: float = 1.0, device=None
) -> Prompts:
    r"""``batch`` prompts of ``k`` pairs :math:`(x_i, w^\top x_i)`, with
    :math:`x_i \sim \mathcal{N}(0, x_\text{scale}^2 I)` and :math:`w \sim \mathcal{N}(0, I)`.

    Drawn from ``generator`` on its device, computed on the CPU and moved to ``device``: with a CPU
    generator the prompts are the same on every device."""
    if batch < 1 or k < 1 or d < 1:
        raise ValueError(f"linear_prompts: batch, k and d must be >= 1, got {batch}, {k}, {d}")
    at = draw_device(generator, "cpu")
    ws = torch.randn(batch, d, generator=generator, device=at).cpu()
    xs = x_scale * torch.randn(batch, k, d, generator=generator, device=at).cpu()
    ys = torch.einsum("bkd,bd->bk", xs, ws)
    return Prompts(xs.to(device), ys.to(device), ws.to(device))


def interleave(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Tokens ``(B, 2k, d + 1)``: :math:`x_i` as ``[x_i, 0]`` followed by :math:`y_i` as
    ``[0, ..., 0, y_i]``."""
    if xs.ndim != 3 or ys.shape != xs.shape[:2]:
        raise ValueError(
            f"interleave: expected xs (B, k, d) and ys (B, k), "
            f"got {tuple(xs.shape)} and {tuple(ys.shape)}"
        )
    B, k, d = xs.shape
    x_tokens = torch.cat([xs, torch.zeros(B, k, 1, device=xs.device, dtype=xs.dtype)], dim=2)
    zeros = torch.zeros(B, k, d, device=xs.device, dtype=xs.dtype)
    y_tokens = torch.cat([zeros, ys[..., None]], dim=2)
    return torch.stack([x_tokens, y_tokens], dim=2).reshape(B, 2 * k, d + 1)


class InContextRegressor(nn.Module):
    """A causal transformer that reads interleaved ``(x, y)`` tokens and, at every :math:`x_i`,
    predicts :math:`y_i`.

    Tokens enter through a linear read-in (instead of a token embedding), plus learned positions;
    the blocks are the book's GPT blocks; a linear read-out gives one number per position.
    """

    def __init__(
        self, d: int, max_points: int, n_layer: int = 4, n_head: int = 4, n_embd: int = 128
    ):
        super().__init__()
        self.d, self.max_points = d, max_points
        self.read_in = nn.Linear(d + 1, n_embd)
        self.wpe = nn.Embedding(2 * max_points, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.read_out = nn.Linear(n_embd, 1)
        nn.init.normal_(self.wpe.weight, std=0.02)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        r"""Predictions ``(B, k)``: entry ``i`` sees :math:`x_1, y_1, \dots, x_i` only."""
        if xs.shape[-1] != self.d:
            raise ValueError(
                f"InContextRegressor: expected inputs of dimension d={self.d}, got {xs.shape[-1]}"
            )
        if xs.shape[1] > self.max_points:
            raise ValueError(
                f"InContextRegressor: {xs.shape[1]} points, "
                f"more than max_points={self.max_points} positions"
            )
        tokens = interleave(xs, ys)
        h = self.read_in(tokens) + self.wpe(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            h = block(h)
        return self.read_out(self.ln_f(h))[:, ::2, 0]


def normalized_error(predictions: torch.Tensor, ys: torch.Tensor, d: int) -> torch.Tensor:
    r"""Mean squared error at each position divided by :math:`d`: ``((pred - y)^2).mean(0) / d``
    for ``(B, k)`` inputs.

    For :math:`x \sim \mathcal{N}(0, I_d)` and :math:`w \sim \mathcal{N}(0, I_d)`,
    :math:`\mathbb{E}[y^2] = d`, so predicting 0 scores 1."""
    if predictions.shape != ys.shape:
        raise ValueError(
            f"normalized_error: shapes differ: {tuple(predictions.shape)} and {tuple(ys.shape)}"
        )
    return (predictions - ys).square().mean(0) / d


# -- baselines: each predicts y_i from the pairs before it ---------------------------------------


def least_squares(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    r""":math:`\hat y_i = \hat w_i^\top x_i` with :math:`\hat w_i = X_{<i}^{+} y_{<i}`, the
    minimum-norm least-squares fit to the first :math:`i-1` pairs (0 for :math:`i = 1`).

    For :math:`w \sim \mathcal{N}(0, I_d)` and noiseless :math:`y` this is the posterior mean of
    :math:`w`, so the best prediction in squared error at every :math:`i`; from :math:`i - 1 = d`
    pairs on it recovers :math:`w` exactly."""
    B, k, d = xs.shape
    out = torch.zeros(B, k, dtype=xs.dtype, device=xs.device)
    for i in range(1, k):
        w = torch.linalg.pinv(xs[:, :i]) @ ys[:, :i, None]  # (B, d, 1)
        out[:, i] = (xs[:, i, None, :] @ w)[:, 0, 0]
    return out


def averaging(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    r""":math:`\hat y_i = \hat w_i^\top x_i` with
    :math:`\hat w_i = \frac{1}{i-1}\sum_{j<i} y_j x_j` (0 for :math:`i = 1`).

    :math:`\hat w_i` is an unbiased estimate of :math:`w` for :math:`x \sim \mathcal{N}(0, I)`, and
    it is exactly one step of gradient descent of size 1 from :math:`w = 0` on
    :math:`L(w) = \frac{1}{2(i-1)}\sum_{j<i} (w^\top x_j - y_j)^2`, since
    :math:`\nabla L(0) = -\frac{1}{i-1}\sum_{j<i} y_j x_j`."""
    B, k, d = xs.shape
    sums = torch.cumsum(ys[..., None] * xs, dim=1)
    counts = torch.arange(1, k + 1, device=xs.device, dtype=xs.dtype)[None, :, None]
    first = torch.zeros(B, 1, d, device=xs.device, dtype=xs.dtype)
    w = torch.cat([first, (sums / counts)[:, :-1]], dim=1)
    return (w * xs).sum(-1)


def nearest_neighbours(xs: torch.Tensor, ys: torch.Tensor, n: int = 3) -> torch.Tensor:
    r""":math:`\hat y_i` = mean of the :math:`y_j` of the ``n`` earlier :math:`x_j` closest to
    :math:`x_i` (fewer if fewer are available; 0 for :math:`i = 1`)."""
    if n < 1:
        raise ValueError(f"nearest_neighbours: n must be >= 1, got {n}")
    B, k, d = xs.shape
    out = torch.zeros(B, k, dtype=xs.dtype, device=xs.device)
    for i in range(1, k):
        dist = torch.cdist(xs[:, i : i + 1], xs[:, :i])[:, 0]
        nearest = dist.topk(min(n, i), dim=1, largest=False).indices
        out[:, i] = ys[:, :i].gather(1, nearest).mean(1)
    return out


# -- the zoo model -------------------------------------------------------------------------------


def icl_config(budget: str | None = None) -> dict:
    """The zoo model ``"icl-linear"``: sizes and training settings, at ``budget`` (default: the
    current one)."""
    return {
        "d": 5,
        "train_points": 20,
        "max_points": 40,
        "n_layer": 3,
        "n_head": 4,
        "n_embd": 64,
        "steps": budgets.pick(test=800, full=5000, budget=budget),
        "batch_size": 32,
        "lr": 2e-3,
        "seed": 0,
    }


def build_icl(config: dict) -> InContextRegressor:
    """A fresh :class:`InContextRegressor` of the sizes in ``config`` (:func:`icl_config`)."""
    return InContextRegressor(
        config["d"],
        config["max_points"],
        n_layer=config["n_layer"],
        n_head=config["n_head"],
        n_embd=config["n_embd"],
    )


def train_icl(model: InContextRegressor, config: dict) -> dict:
    """Train on fresh prompts of ``train_points`` pairs, the loss the mean normalized squared error
    over all positions; AdamW, cosine schedule after a warm-up of a twentieth of the steps."""
    seed(config["seed"])
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(config["seed"])
    d, k = config["d"], config["train_points"]

    def loss(m, p):
        return normalized_error(m(p.xs, p.ys), p.ys, d).mean()

    def prompts():
        return linear_prompts(config["batch_size"], k, d, g, device=device)

    warmup = config["steps"] // 20
    return fit_cosine(
        model, loss, prompts, config, warmup=warmup, title="in-context regression"
    ).as_meta()


ICL_RECIPE = Recipe(
    "icl-linear",
    icl_config,
    build_icl,
    train_icl,
    "transformer trained to predict y = w.x from in-context examples, fresh w per prompt "
    "(Garg et al. 2022)",
)
