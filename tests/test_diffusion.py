import math

import pytest
import torch

from fmbook.diffusion import NoiseSchedule


def test_linear_schedule_known_values():
    s = NoiseSchedule.linear()
    assert s.T == 1000
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    # Ho et al. (2020): alpha-bar at T is about 4.0e-5
    expected = math.prod(1 - (1e-4 + (0.02 - 1e-4) * i / 999) for i in range(1000))
    assert s.alphas_cumprod[-1].item() == pytest.approx(expected, rel=1e-9)
    assert s.alphas_cumprod[-1].item() == pytest.approx(4.0e-5, rel=0.02)


def test_cosine_schedule_follows_its_formula():
    s = NoiseSchedule.cosine(T=100)
    f = lambda t: math.cos((t / 100 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 50, 90):
        assert s.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert s.betas.max().item() <= 0.999


def test_q_sample_formula_and_moments():
    s = NoiseSchedule.linear()
    x0 = torch.full((200_000,), 0.7, dtype=torch.float64)
    noise = torch.randn(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    xt = s.q_sample(x0, 300, noise)
    abar = s.alphas_cumprod[300]
    torch.testing.assert_close(xt, abar.sqrt() * x0 + (1 - abar).sqrt() * noise)
    assert xt.mean().item() == pytest.approx(abar.sqrt().item() * 0.7, abs=0.01)
    assert xt.var().item() == pytest.approx(1 - abar.item(), rel=0.02)


def test_q_sample_one_step_per_example():
    s = NoiseSchedule.linear(T=10)
    x0, noise = torch.ones(3, 2, 2), torch.zeros(3, 2, 2)
    xt = s.q_sample(x0, torch.tensor([0, 5, 9]), noise)
    for i, t in enumerate([0, 5, 9]):
        torch.testing.assert_close(xt[i], torch.full((2, 2), s.alphas_cumprod[t].sqrt().item()))


def test_bad_input():
    with pytest.raises(ValueError, match="T must be an int >= 1"):
        NoiseSchedule.linear(T=0)
    with pytest.raises(ValueError, match=r"every beta must be in \(0, 1\)"):
        NoiseSchedule(torch.tensor([0.1, 1.0]))
    s = NoiseSchedule.linear(T=10)
    with pytest.raises(ValueError, match=r"t must be in \[0, T\) = \[0, 10\)"):
        s.q_sample(torch.zeros(2), 10, torch.zeros(2))
    with pytest.raises(ValueError, match="noise must have the shape of x0"):
        s.q_sample(torch.zeros(2), 1, torch.zeros(3))
    with pytest.raises(ValueError, match="one t per example"):
        s.q_sample(torch.zeros(2, 4), torch.tensor([1, 2, 3]), torch.zeros(2, 4))
