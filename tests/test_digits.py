import pytest
import torch

from fmbook import digits
from fmbook.diffusion import NoiseSchedule, ResidualMLPDenoiser


def test_split_is_stratified_scaled_and_disjoint():
    d = digits.load()
    assert d.test_x.shape == (500, 64) and len(d.train_x) + len(d.test_x) == 1797
    assert d.train_x.min() == -1 and d.train_x.max() == 1
    counts = torch.bincount(d.test_y, minlength=10)
    expected = 500 * torch.bincount(torch.cat([d.train_y, d.test_y]), minlength=10) / 1797
    assert ((counts - expected).abs() <= 1).all()  # stratified: each class in its overall proportion
    # no held-out digit is also a training digit (the set has no exact duplicates across the split)
    assert not (torch.cdist(d.test_x, d.train_x).min(dim=1).values == 0).any()


def test_images_and_labels_helpers():
    x = torch.arange(128.0).reshape(2, 64)
    assert digits.images(x).shape == (2, 8, 8) and digits.images(x)[1, 0, 0] == 64
    assert digits.balanced_labels(3).tolist() == [c for c in range(10) for _ in range(3)]
    with pytest.raises(ValueError, match="last dimension of 64"):
        digits.images(torch.zeros(2, 63))
    with pytest.raises(ValueError, match="n_per_class must be >= 1"):
        digits.balanced_labels(0)


def test_random_shift_moves_the_image_by_at_most_one_pixel():
    x = -torch.ones(1, 64)
    x[0, 3 * 8 + 4] = 1.0  # one lit pixel at row 3, column 4
    for s in range(20):
        y = digits.images(digits.random_shift(x, torch.Generator().manual_seed(s)))[0]
        row, col = divmod(int(y.argmax()), 8)
        assert abs(row - 3) <= 1 and abs(col - 4) <= 1 and (y == 1).sum() == 1


def test_diffusion_loss_is_the_noise_prediction_error_written_out():
    torch.manual_seed(0)
    s = NoiseSchedule.cosine(T=100)
    m = ResidualMLPDenoiser(64, T=100, num_classes=10, width=32, depth=1)
    x0, y = digits.load().train_x[:8], digits.load().train_y[:8]
    loss = digits.diffusion_loss(m, x0, y, s, 0.5, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, 100, (8,), generator=g)
    eps = torch.randn(8, 64, generator=g)
    c = torch.where(torch.rand(8, generator=g) < 0.5, 10, y)
    abar = s.alphas_cumprod[t].float()[:, None]
    by_hand = ((m(abar.sqrt() * x0 + (1 - abar).sqrt() * eps, t, c) - eps) ** 2).mean()
    torch.testing.assert_close(loss, by_hand)
    with pytest.raises(ValueError, match=r"p_uncond must be in \[0, 1\)"):
        digits.diffusion_loss(m, x0, y, s, 1.0, g)


def test_score_separates_real_digits_from_noise():
    torch.manual_seed(0)
    evaluator = digits.Evaluator().eval()  # untrained: its random features already tell noise from digits
    d = digits.load()
    real = digits.score(evaluator, d.train_x[:500], d.train_y[:500])
    noise = digits.score(evaluator, torch.rand(500, 64) * 2 - 1)
    assert set(real) == {"fd", "c2st", "accuracy"} and "accuracy" not in noise
    assert real["fd"] < noise["fd"] and real["c2st"] < 0.65 < noise["c2st"]
    with pytest.raises(ValueError, match=r"shape \(n, 64\)"):
        digits.score(evaluator, torch.zeros(10, 63))


def test_show_grid_lays_out_rows_and_rejects_too_few_digits():
    import matplotlib

    matplotlib.use("Agg")
    ax = digits.show_grid(digits.load().train_x[:30], rows=3, title="t")
    assert ax.images[0].get_array().shape == (30, 100) and ax.get_title() == "t"
    with pytest.raises(ValueError, match="cannot lay out 2 digits in 3 rows"):
        digits.show_grid(digits.load().train_x[:2], rows=3)


def test_random_shift_uses_only_its_generator():
    x = torch.linspace(-1, 1, 64)[None]
    a = digits.random_shift(x, torch.Generator(device=torch.device("cpu")).manual_seed(4))
    torch.manual_seed(0)  # the global generator plays no part
    b = digits.random_shift(x, torch.Generator(device="cpu").manual_seed(4))
    assert torch.equal(a, b)
