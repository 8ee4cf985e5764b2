"""fmbook.data.batching: random windows of a token sequence and their next tokens."""

import pytest
import torch

from fmbook import data


def test_random_windows_are_windows_of_the_tokens_and_their_next_tokens():
    # distinct tokens: the first token of a window tells where the window starts
    tokens = torch.randperm(500, generator=torch.Generator().manual_seed(0))
    x, y = data.random_windows(tokens, 16, 64, torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (64, 16) and x.dtype == y.dtype == torch.long
    where = {int(t): i for i, t in enumerate(tokens)}
    for xi, yi in zip(x, y):
        s = where[int(xi[0])]
        assert torch.equal(xi, tokens[s : s + 16]) and torch.equal(yi, tokens[s + 1 : s + 17])


def test_random_windows_reach_every_start_including_the_last():
    tokens = torch.arange(20, dtype=torch.uint8)
    x, _ = data.random_windows(tokens, 8, 4000, torch.Generator().manual_seed(0))
    assert set(x[:, 0].tolist()) == set(range(20 - 8))  # starts 0 .. len - block_size - 1


def test_random_windows_follow_the_generator():
    tokens = torch.randperm(300)
    a = data.random_windows(tokens, 8, 5, torch.Generator().manual_seed(3))
    b = data.random_windows(tokens, 8, 5, torch.Generator().manual_seed(3))
    c = data.random_windows(tokens, 8, 5, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


@pytest.mark.parametrize(
    ("tokens", "block", "batch", "error", "match"),
    [
        (torch.zeros(3, 3, dtype=torch.long), 2, 1, ValueError, "1-D"),
        (torch.zeros(10), 2, 1, TypeError, "integer"),
        (torch.zeros(10, dtype=torch.long), 0, 1, ValueError, "block_size"),
        (torch.zeros(10, dtype=torch.long), 2, 0, ValueError, "batch_size"),
        (torch.zeros(5, dtype=torch.long), 5, 1, ValueError, "at least"),
    ],
)
def test_random_windows_bad_input(tokens, block, batch, error, match):
    with pytest.raises(error, match=match):
        data.random_windows(tokens, block, batch)
