import pytest
import torch

from fmbook.diffusion import MLPDenoiser, NoiseSchedule, ResidualMLPDenoiser
from fmbook.objectives import noise_prediction_loss


def test_noise_prediction_loss_is_the_squared_error_of_the_noise_written_out():
    torch.manual_seed(0)
    s = NoiseSchedule.cosine(T=100)
    m = ResidualMLPDenoiser(64, T=100, num_classes=10, width=32, depth=1)
    x0, y = torch.rand(8, 64) * 2 - 1, torch.arange(8)
    loss = noise_prediction_loss(m, x0, s, y, 0.5, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, 100, (8,), generator=g)
    eps = torch.randn(8, 64, generator=g)
    c = torch.where(torch.rand(8, generator=g) < 0.5, 10, y)
    assert (c == 10).any() and (c != 10).any()  # some labels hidden, some kept
    abar = s.alphas_cumprod[t].float()[:, None]
    by_hand = ((m(abar.sqrt() * x0 + (1 - abar).sqrt() * eps, t, c) - eps) ** 2).mean()
    torch.testing.assert_close(loss, by_hand)


def test_noise_prediction_loss_without_labels_draws_from_the_global_generator():
    s = NoiseSchedule.linear(T=50)
    m = MLPDenoiser(2, T=50, width=16, depth=1)
    x0 = torch.randn(32, 2)
    torch.manual_seed(1)
    t = torch.randint(50, (32,))
    eps = torch.randn(32, 2)
    abar = s.alphas_cumprod.float()[t][:, None]
    by_hand = ((m(abar.sqrt() * x0 + (1 - abar).sqrt() * eps, t) - eps) ** 2).mean()
    torch.manual_seed(1)
    torch.testing.assert_close(noise_prediction_loss(m, x0, s), by_hand)
    # a perfect noise predictor scores zero
    g = torch.Generator().manual_seed(0)
    torch.randint(0, 50, (32,), generator=g)  # the steps come first
    noise = torch.randn(32, 2, generator=g)

    def oracle(x_t, t):
        return noise

    assert noise_prediction_loss(oracle, x0, s, generator=torch.Generator().manual_seed(0)) == 0


def test_noise_prediction_loss_rejects_bad_input():
    s = NoiseSchedule.cosine(T=10)
    m = ResidualMLPDenoiser(4, T=10, num_classes=3, width=8, depth=1)
    x0, y = torch.zeros(5, 4), torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match="p_uncond"):
        noise_prediction_loss(m, x0, s, y, 1.0)
    with pytest.raises(ValueError, match="no labels"):
        noise_prediction_loss(m, x0, s, None, 0.1)
    with pytest.raises(ValueError, match="one label per example"):
        noise_prediction_loss(m, x0, s, y[:4])
