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
    with pytest.raises(ValueError, match="T must be an int"):
        NoiseSchedule.linear(T=0)
    with pytest.raises(ValueError, match="every beta"):
        NoiseSchedule(torch.tensor([0.1, 1.0]))
    s = NoiseSchedule.linear(T=10)
    with pytest.raises(ValueError, match=r"\[0, T\)"):
        s.q_sample(torch.zeros(2), 10, torch.zeros(2))
    with pytest.raises(ValueError, match="shape of x0"):
        s.q_sample(torch.zeros(2), 1, torch.zeros(3))
    with pytest.raises(ValueError, match="one t per example"):
        s.q_sample(torch.zeros(2, 4), torch.tensor([1, 2, 3]), torch.zeros(2, 4))


def gaussian_posterior(s, x0, xt, t):
    """Independent derivation: condition the joint Gaussian of (x_{t-1}, x_t) given x0."""
    abar_prev = 1.0 if t == 0 else s.alphas_cumprod[t - 1].item()
    alpha = s.alphas[t].item()
    # x_{t-1} ~ N(sqrt(abar_prev) x0, 1 - abar_prev); x_t = sqrt(alpha) x_{t-1} + sqrt(1 - alpha) e
    var_prev = 1 - abar_prev
    var_t = alpha * var_prev + (1 - alpha)
    cov = math.sqrt(alpha) * var_prev
    mean_prev, mean_t = math.sqrt(abar_prev) * x0, math.sqrt(alpha * abar_prev) * x0
    mean = mean_prev + cov / var_t * (xt - mean_t)
    variance = var_prev - cov**2 / var_t
    return mean, variance


@pytest.mark.parametrize("t", [0, 1, 10, 500, 999])
def test_posterior_matches_gaussian_conditioning(t):
    s = NoiseSchedule.linear()
    x0, xt = (
        torch.tensor([0.3, -0.8], dtype=torch.float64),
        torch.tensor([1.1, 0.2], dtype=torch.float64),
    )
    mean, variance = s.posterior(x0, xt, t)
    for i in range(2):
        m, v = gaussian_posterior(s, x0[i].item(), xt[i].item(), t)
        assert mean[i].item() == pytest.approx(m, rel=1e-9, abs=1e-12)
        assert variance[i].item() == pytest.approx(v, rel=1e-9, abs=1e-15)


def test_predict_x0_inverts_q_sample():
    s = NoiseSchedule.cosine(T=50)
    g = torch.Generator().manual_seed(0)
    x0, eps = (
        torch.randn(4, 3, generator=g, dtype=torch.float64),
        torch.randn(4, 3, generator=g, dtype=torch.float64),
    )
    t = torch.tensor([0, 10, 25, 49])
    torch.testing.assert_close(s.predict_x0_from_eps(s.q_sample(x0, t, eps), t, eps), x0)


def test_ddpm_step_is_the_epsilon_form_of_ho_et_al():
    s = NoiseSchedule.linear()
    g = torch.Generator().manual_seed(1)
    xt, eps = (
        torch.randn(5, generator=g, dtype=torch.float64),
        torch.randn(5, generator=g, dtype=torch.float64),
    )
    for t in (999, 300, 1):
        a, ab = s.alphas[t], s.alphas_cumprod[t]
        expected = (xt - (1 - a) / (1 - ab).sqrt() * eps) / a.sqrt()  # Algorithm 2, without noise
        torch.testing.assert_close(s.ddpm_step(xt, t, eps), expected)
        # with noise z: sigma_t^2 = beta-tilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t
        z = torch.full((5,), 0.7, dtype=torch.float64)
        sigma = ((1 - s.alphas_cumprod[t - 1]) / (1 - ab) * (1 - a)).sqrt()
        torch.testing.assert_close(s.ddpm_step(xt, t, eps, z), expected + sigma * z)


def test_ddim_eta_one_between_neighbours_has_the_ddpm_variance_and_eta_zero_is_deterministic():
    s = NoiseSchedule.linear()
    xt, eps = (
        torch.full((1,), 0.5, dtype=torch.float64),
        torch.full((1,), -0.2, dtype=torch.float64),
    )
    t = 400
    x0 = s.predict_x0_from_eps(xt, t, eps)
    _, beta_tilde = s.posterior(x0, xt, t)
    plus = s.ddim_step(xt, t, t - 1, eps, eta=1.0, noise=torch.ones(1, dtype=torch.float64))
    base = s.ddim_step(xt, t, t - 1, eps, eta=1.0, noise=torch.zeros(1, dtype=torch.float64))
    assert (plus - base).item() == pytest.approx(beta_tilde.sqrt().item(), rel=1e-9)
    assert torch.equal(
        s.ddim_step(xt, t, 100, eps), s.ddim_step(xt, t, 100, eps, noise=torch.ones(1))
    )
    # to the end (s = -1) with eta = 0 the result is x0-hat
    torch.testing.assert_close(s.ddim_step(xt, t, -1, eps), x0)


def test_guidance_and_step_sequences():
    from fmbook.diffusion import guided_eps, sampling_steps

    c, u = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.0])
    torch.testing.assert_close(guided_eps(c, u, 0.0), c)
    torch.testing.assert_close(guided_eps(c, u, 2.0), 3 * c - 2 * u)
    assert sampling_steps(1000, 1000) == list(range(999, -1, -1))
    steps = sampling_steps(1000, 50)
    assert len(steps) == 50 and steps[0] == 999 and steps[-1] == 0
    assert sampling_steps(1000, 1) == [999]  # one jump from pure noise, not a step at index 0
    assert sampling_steps(1000, 2) == [999, 0]
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="number of steps"):
            sampling_steps(1000, bad)
    with pytest.raises(ValueError, match="guidance scale"):
        guided_eps(c, u, -1.0)
    with pytest.raises(ValueError, match="number of steps"):
        sampling_steps(1000, 2000)


def test_sampler_steps_reject_bad_input():
    s = NoiseSchedule.linear(T=10)
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="-1 <= s < t"):
        s.ddim_step(x, 5, 5, x)
    with pytest.raises(ValueError, match="eta"):
        s.ddim_step(x, 5, 2, x, eta=-0.1)
    with pytest.raises(TypeError, match="t must be an int"):
        s.ddpm_step(x, torch.tensor([1, 2]), x)
    with pytest.raises(ValueError, match="same shape"):
        s.posterior(torch.zeros(2), torch.zeros(3), 1)


def test_sampler_with_the_true_noise_recovers_a_point_mass():
    # for data concentrated at c, the exact noise prediction is
    # eps = (x_t - sqrt(abar) c) / sqrt(1 - abar)
    from fmbook.diffusion import sample

    s = NoiseSchedule.linear(T=200)
    c = torch.tensor([1.5, -0.5], dtype=torch.float64)

    def eps_fn(x, t):
        abar = s.alphas_cumprod[t][:, None]
        return (x - abar.sqrt() * c) / (1 - abar).sqrt()

    g = torch.Generator().manual_seed(0)
    for n_steps in (None, 20):
        x = sample(eps_fn, s, (64, 2), n_steps=n_steps, generator=g).double()
        torch.testing.assert_close(x, c.expand(64, 2), atol=1e-6, rtol=0)


def test_mlp_denoiser_shapes_and_bad_input():
    from fmbook.diffusion import MLPDenoiser

    m = MLPDenoiser(2, T=100)
    assert m(torch.zeros(5, 2), torch.arange(5)).shape == (5, 2)
    with pytest.raises(ValueError, match="expected x"):
        m(torch.zeros(5, 2), torch.arange(4))


def test_clipping_clamps_x0_and_keeps_ddim_consistent():
    s = NoiseSchedule.cosine(T=100)
    x_t = torch.full((3, 4), 2.0, dtype=torch.float64)
    eps = torch.zeros_like(
        x_t
    )  # the model claims x_t is pure signal: x0 = x_t / sqrt(abar), far outside [-1, 1]
    t = 90
    # DDIM to the clean sample returns the clipped x0 ...
    torch.testing.assert_close(s.ddim_step(x_t, t, -1, eps, clip=1.0), torch.ones_like(x_t))
    # ... and an intermediate step is the forward jump of the clipped x0 with the recomputed noise.
    abar_t, abar_s = s.alphas_cumprod[t], s.alphas_cumprod[40]
    eps_clipped = (x_t - abar_t.sqrt() * 1.0) / (1 - abar_t).sqrt()
    expected = abar_s.sqrt() * 1.0 + (1 - abar_s).sqrt() * eps_clipped
    torch.testing.assert_close(s.ddim_step(x_t, t, 40, eps, clip=1.0), expected)
    # DDPM's mean uses the clipped x0 in the posterior
    mean, _ = s.posterior(torch.ones_like(x_t), x_t, t)
    torch.testing.assert_close(s.ddpm_step(x_t, t, eps, clip=1.0), mean)
    # clipping changes nothing when x0 is already in range
    x0 = torch.full_like(x_t, 0.3)
    noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    xt = s.q_sample(x0, t, noise)
    torch.testing.assert_close(
        s.ddim_step(xt, t, 40, noise, clip=1.0), s.ddim_step(xt, t, 40, noise)
    )
    with pytest.raises(ValueError, match="clip"):
        s.ddpm_step(x_t, t, eps, clip=0.0)


def test_residual_denoiser_and_conditional_eps():
    from fmbook.diffusion import ResidualMLPDenoiser, conditional_eps, guided_eps

    torch.manual_seed(0)
    m = ResidualMLPDenoiser(16, T=50, num_classes=3, width=32, depth=2).eval()
    x, t = torch.randn(4, 16), torch.tensor([0, 10, 20, 49])
    c = torch.tensor([0, 1, 2, 1])
    assert m(x, t, c).shape == (4, 16)
    assert m.null_class == 3
    null = torch.full_like(c, 3)
    torch.testing.assert_close(conditional_eps(m, c, 0.0)(x, t), m(x, t, c))
    torch.testing.assert_close(
        conditional_eps(m, c, 2.0)(x, t), guided_eps(m(x, t, c), m(x, t, null), 2.0)
    )
    # the label matters: another class gives another prediction
    assert not torch.allclose(m(x, t, c), m(x, t, (c + 1) % 3))
    with pytest.raises(ValueError, match="guidance scale"):
        conditional_eps(m, c, -1.0)
    with pytest.raises(ValueError, match="expected x"):
        m(x, t, c[:2])


def test_sample_rejects_more_steps_than_T():
    from fmbook.diffusion import sample

    s = NoiseSchedule.linear(T=10)
    with pytest.raises(ValueError, match="number of steps"):
        sample(lambda x, t: x, s, (2, 2), n_steps=11)


def test_schedule_lives_in_float64_on_the_cpu_whatever_its_input():
    # a list keeps float64 precision (not rounded through float32); a float32 tensor is widened
    s = NoiseSchedule([0.1, 0.2, 0.3])
    assert s.betas.dtype == torch.float64 and s.betas.device.type == "cpu"
    assert s.betas[0].item() == 0.1
    s32 = NoiseSchedule(torch.tensor([0.1, 0.2, 0.3], dtype=torch.float32, requires_grad=True))
    assert s32.betas.dtype == torch.float64 and not s32.betas.requires_grad


def test_step_values_are_cast_to_the_datas_dtype_and_t_is_read_on_the_cpu():
    s = NoiseSchedule.linear(T=50)
    x0 = torch.ones(3, 2)  # float32
    t = torch.tensor([0, 10, 49])
    out = s.q_sample(x0, t, torch.zeros_like(x0))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0], s.alphas_cumprod[t].sqrt().float())
    assert s._check_t(t).device.type == "cpu"


@pytest.mark.parametrize("n_steps", [None, 5])
def test_sample_draws_noise_from_the_generator_whatever_the_device_spelling(n_steps):
    from fmbook.diffusion import sample

    s = NoiseSchedule.linear(T=20)

    def eps_fn(x, t):
        return torch.zeros_like(x)

    runs = [
        sample(
            eps_fn,
            s,
            (4, 2),
            n_steps,
            generator=torch.Generator(device=d).manual_seed(0),
            device=d,
            trajectory=True,
        )
        for d in (torch.device("cpu"), "cpu")
    ]
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=0, atol=0)
    # x_T is the generator's first draw
    torch.testing.assert_close(
        runs[0][1][0][1], torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    )
