"""Measuring how close generated samples are to real data."""

from __future__ import annotations

import torch


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, n_projections: int = 500, seed: int = 0) -> float:
    r"""Sliced 1-Wasserstein distance between two equally sized point clouds in :math:`\mathbb{R}^d`.

    Both clouds are projected onto ``n_projections`` random unit directions
    :math:`\theta`; in one dimension the Wasserstein-1 distance is the mean
    absolute difference of the sorted projections. The result is its average
    over directions, :math:`\mathbb{E}_\theta\, W_1(\theta^\top a, \theta^\top b)`.
    """
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"sliced_wasserstein: expected two (n, d) tensors of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(a.shape[1], n_projections, generator=g, dtype=torch.float64)
    theta /= theta.norm(dim=0, keepdim=True)
    pa = (a.double().cpu() @ theta).sort(dim=0).values
    pb = (b.double().cpu() @ theta).sort(dim=0).values
    return (pa - pb).abs().mean().item()
