r"""Diffusion models: noise schedules and the forward process (Ho et al. 2020).

The forward process adds Gaussian noise in :math:`T` small steps,
:math:`q(x_t \mid x_{t-1}) = \mathcal{N}(\sqrt{1-\beta_t}\,x_{t-1}, \beta_t I)`.
With :math:`\alpha_t = 1 - \beta_t` and :math:`\bar\alpha_t = \prod_{s \le t}\alpha_s`
any step can be reached in one jump,

.. math:: q(x_t \mid x_0) = \mathcal{N}(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I).

Steps are indexed ``t = 0, ..., T-1`` in code (step ``t`` of the paper is ``t-1`` here).
"""

from __future__ import annotations

import math

import torch


class NoiseSchedule:
    """The variances :math:`\\beta_t` of the forward process and the quantities derived from them."""

    def __init__(self, betas: torch.Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) < 1:
            raise ValueError(
                f"NoiseSchedule: betas must be a 1-D tensor with T >= 1 entries, got shape {tuple(betas.shape)}"
            )
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError(
                f"NoiseSchedule: every beta must be in (0, 1), got min {betas.min().item():.3g}, max {betas.max().item():.3g}"
            )
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

    @property
    def T(self) -> int:
        return len(self.betas)

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
        """Ho et al. (2020): :math:`\\beta_t` linear from ``beta_start`` to ``beta_end``."""
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"NoiseSchedule.linear: T must be an int >= 1, got {T!r}")
        return cls(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
        """Nichol & Dhariwal (2021): :math:`\\bar\\alpha_t = f(t)/f(0)`, :math:`f(t) = \\cos^2\\big(\\frac{t/T + s}{1+s}\\cdot\\frac{\\pi}{2}\\big)`,
        with :math:`\\beta_t = 1 - \\bar\\alpha_t/\\bar\\alpha_{t-1}` clipped at ``max_beta``."""
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"NoiseSchedule.cosine: T must be an int >= 1, got {T!r}")
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        alphas_cumprod = f / f[0]
        betas = (1 - alphas_cumprod[1:] / alphas_cumprod[:-1]).clamp(max=max_beta)
        return cls(betas)

    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """A sample of :math:`q(x_t \\mid x_0)`: :math:`\\sqrt{\\bar\\alpha_t}\\,x_0 + \\sqrt{1-\\bar\\alpha_t}\\,\\epsilon`.

        ``t`` is an int or a tensor of one step per example (shape ``(B,)``,
        ``x0`` of shape ``(B, ...)``); ``noise`` has the shape of ``x0``.
        """
        if noise.shape != x0.shape:
            raise ValueError(
                f"q_sample: noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}"
            )
        t = torch.as_tensor(t, dtype=torch.long)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.T):
            raise ValueError(f"q_sample: t must be in [0, T) = [0, {self.T}), got {t.tolist()}")
        if t.ndim == 1 and (x0.ndim == 0 or t.shape[0] != x0.shape[0]):
            raise ValueError(
                f"q_sample: one t per example: t has {t.shape[0]} entries, x0 has shape {tuple(x0.shape)}"
            )
        abar = self.alphas_cumprod[t].to(dtype=x0.dtype, device=x0.device)
        if t.ndim == 1:
            abar = abar.view(-1, *([1] * (x0.ndim - 1)))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise
