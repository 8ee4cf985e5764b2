import dataclasses

import matplotlib.pyplot as plt
import pytest
import torch

from fmbook import digits, zoo
from fmbook.diffusion import NoiseSchedule, ResidualMLPDenoiser, conditional_eps, sample


def test_split_is_stratified_scaled_and_disjoint():
    d = digits.load()
    assert d.test_x.shape == (500, 64) and len(d.train_x) + len(d.test_x) == 1797
    assert d.train_x.min() == -1 and d.train_x.max() == 1
    counts = torch.bincount(d.test_y, minlength=10)
    expected = 500 * torch.bincount(torch.cat([d.train_y, d.test_y]), minlength=10) / 1797
    assert (
        (counts - expected).abs() <= 1
    ).all()  # stratified: each class in its overall proportion
    # no held-out digit is also a training digit (the set has no exact duplicates across the split)
    assert not (torch.cdist(d.test_x, d.train_x).min(dim=1).values == 0).any()


def test_images_and_labels_helpers():
    x = torch.arange(128.0).reshape(2, 64)
    assert digits.images(x).shape == (2, 8, 8) and digits.images(x)[1, 0, 0] == 64
    assert digits.balanced_labels(3).tolist() == [c for c in range(10) for _ in range(3)]
    with pytest.raises(ValueError, match="last dimension"):
        digits.images(torch.zeros(2, 63))
    with pytest.raises(ValueError, match="n_per_class"):
        digits.balanced_labels(0)


def test_random_shift_moves_the_image_by_at_most_one_pixel():
    x = -torch.ones(1, 64)
    x[0, 3 * 8 + 4] = 1.0  # one lit pixel at row 3, column 4
    for s in range(20):
        y = digits.images(digits.random_shift(x, torch.Generator().manual_seed(s)))[0]
        row, col = divmod(int(y.argmax()), 8)
        assert abs(row - 3) <= 1 and abs(col - 4) <= 1 and (y == 1).sum() == 1


def test_score_separates_real_digits_from_noise():
    torch.manual_seed(0)
    evaluator = (
        digits.Evaluator().eval()
    )  # untrained: its random features already tell noise from digits
    d = digits.load()
    real = digits.score(evaluator, d.train_x[:500], d.train_y[:500])
    noise = digits.score(evaluator, torch.rand(500, 64) * 2 - 1)
    assert set(real) == {"fd", "c2st", "accuracy"} and "accuracy" not in noise
    assert real["fd"] < noise["fd"] and real["c2st"] < 0.65 < noise["c2st"]
    with pytest.raises(ValueError, match="shape"):
        digits.score(evaluator, torch.zeros(10, 63))


def test_show_grid_lays_out_rows_and_rejects_too_few_digits():
    import matplotlib

    matplotlib.use("Agg")
    ax = digits.show_grid(digits.load().train_x[:30], rows=3, title="t")
    assert ax.images[0].get_array().shape == (30, 100) and ax.get_title() == "t"
    with pytest.raises(ValueError, match="cannot lay out"):
        digits.show_grid(digits.load().train_x[:2], rows=3)


def test_random_shift_uses_only_its_generator():
    x = torch.linspace(-1, 1, 64)[None]
    a = digits.random_shift(x, torch.Generator(device=torch.device("cpu")).manual_seed(4))
    torch.manual_seed(0)  # the global generator plays no part
    b = digits.random_shift(x, torch.Generator(device="cpu").manual_seed(4))
    assert torch.equal(a, b)


def test_recipes_follow_the_naming_rule_and_keep_their_numbers():
    for config in (digits.ddpm_config, digits.evaluator_config):
        for budget in ("test", "full"):
            values = config(budget)
            assert all(isinstance(v, (int, float, str)) for v in values.values())  # flat, plain
    assert digits.ddpm_config("test")["steps"] == 500
    assert digits.ddpm_config("full")["steps"] == 8000
    assert digits.evaluator_config("test")["steps"] == 300
    assert digits.evaluator_config("full")["steps"] == 1500
    assert digits.DDPM_RECIPE.config is digits.ddpm_config
    assert digits.EVALUATOR_RECIPE.train is digits.train_evaluator
    names = (digits.DDPM_RECIPE.name, digits.EVALUATOR_RECIPE.name)
    assert names == ("ddpm-digits", "digits-evaluator")
    with pytest.raises(ValueError, match="budget"):
        digits.ddpm_config("huge")


def tiny_denoiser(T=20):
    torch.manual_seed(0)
    model = ResidualMLPDenoiser(64, T=T, num_classes=10, width=8, depth=1).eval()
    return model, NoiseSchedule.cosine(T)


def test_generate_is_the_library_sampler_with_a_seeded_cpu_generator():
    model, s = tiny_denoiser()
    labels = torch.tensor([3, 1, 4, 1])
    for steps, eta, w in [(None, 1.0, 0.0), (5, 0.0, 2.0), (5, 1.0, 0.5)]:
        x = digits.generate(model, labels, steps, eta=eta, w=w, seed=7, schedule=s)
        expected = sample(
            conditional_eps(model, labels, w),
            s,
            (4, 64),
            n_steps=steps,
            eta=eta,
            generator=torch.Generator().manual_seed(7),
            clip=1.0,
        )
        torch.testing.assert_close(x, expected)
        assert x.abs().max() <= 1.0 + 1e-6  # clipped x0-hat keeps DDIM/DDPM samples near the range
    assert not torch.equal(
        digits.generate(model, labels, 5, seed=1, schedule=s),
        digits.generate(model, labels, 5, seed=2, schedule=s),
    )


def test_generate_a_count_is_unlabelled_and_bad_labels_are_refused():
    model, s = tiny_denoiser()
    null = torch.full((3,), model.null_class)
    torch.testing.assert_close(
        digits.generate(model, 3, 4, schedule=s), digits.generate(model, null, 4, schedule=s)
    )
    with pytest.raises(ValueError, match="count"):
        digits.generate(model, 0, 4, schedule=s)
    with pytest.raises(ValueError, match="1-D"):
        digits.generate(model, torch.zeros(2, 2, dtype=torch.long), 4, schedule=s)
    with pytest.raises(TypeError, match="labels"):
        digits.generate(model, "3", 4, schedule=s)


def test_ddpm_loads_the_zoo_model_with_its_schedule(tmp_path, monkeypatch):
    monkeypatch.setenv("FMBOOK_CACHE", str(tmp_path))
    monkeypatch.setenv("FMBOOK_DEVICE", "cpu")
    monkeypatch.setenv("FMBOOK_BUDGET", "test")
    monkeypatch.setenv("FMBOOK_HEADLESS", "1")
    tiny = dict(digits.ddpm_config("test"), T=30, width=8, depth=1, steps=3, batch_size=8)
    recipe = dataclasses.replace(digits.DDPM_RECIPE, config=lambda budget=None: tiny)
    monkeypatch.setitem(zoo._RECIPES, "ddpm-digits", recipe)
    drawn = []
    monkeypatch.setattr(digits.LossPlot, "finish", lambda self, history: drawn.append(history))
    model, schedule, meta = digits.ddpm("cpu", with_meta=True, loss_plot=True)
    assert not meta["cached"] and len(drawn) == 1  # trained now: fit drew its figure
    assert isinstance(model, ResidualMLPDenoiser) and schedule.T == 30
    assert len(meta["train_loss"]) == 3
    again, schedule = digits.ddpm("cpu", loss_plot=True)
    assert len(drawn) == 2 and drawn[1].train_loss == meta["train_loss"]  # from the cache: again
    torch.testing.assert_close(again.state_dict(), model.state_dict())
    digits.ddpm("cpu")
    assert len(drawn) == 2
    plt.close("all")  # the figures LossPlot opened before its (replaced) finish
