"""Batches for language modelling: random windows of a long token sequence."""

from __future__ import annotations

import torch

from fmbook.runtime import draw_device


def random_windows(
    tokens: torch.Tensor,
    block_size: int,
    batch_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows ``x`` of ``tokens`` and their shift-by-one targets ``y``.

    For a start position :math:`s`, ``x = tokens[s : s+T]`` and
    ``y = tokens[s+1 : s+T+1]``, so ``y[t]`` is the token that follows ``x[t]``;
    both have shape ``(batch_size, block_size)``.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 1:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"random_windows: tokens must be a 1-D tensor, got {shape}")
    if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"random_windows: tokens must be an integer tensor, got {tokens.dtype}")
    if block_size < 1 or batch_size < 1:
        raise ValueError(
            f"random_windows: block_size and batch_size must be >= 1, "
            f"got block_size={block_size}, batch_size={batch_size}"
        )
    if len(tokens) < block_size + 1:
        raise ValueError(
            f"random_windows: need at least block_size + 1 = {block_size + 1} tokens, "
            f"got {len(tokens)}"
        )
    at = draw_device(generator, "cpu")  # a generator draws on its own device
    n_starts = len(tokens) - block_size  # s = 0 .. len - T - 1, so that y has T tokens
    starts = torch.randint(n_starts, (batch_size,), generator=generator, device=at).cpu()
    offsets = torch.arange(block_size + 1)
    windows = tokens[starts[:, None] + offsets].long()
    x, y = windows[:, :-1], windows[:, 1:]
    if device is not None:
        x, y = x.to(device), y.to(device)
    return x, y
