import pytest
import torch

from fmbook import zoo
from fmbook.icl import (
    ICL_RECIPE,
    InContextRegressor,
    averaging,
    build_icl,
    icl_config,
    interleave,
    least_squares,
    linear_prompts,
    nearest_neighbours,
    normalized_error,
    train_icl,
)


def prompts(batch=64, k=12, d=3, seed=0):
    return linear_prompts(batch, k, d, torch.Generator().manual_seed(seed))


def test_prompts_are_linear_in_a_fresh_w_per_prompt():
    p = prompts()
    torch.testing.assert_close(p.ys, (p.xs * p.ws[:, None, :]).sum(-1))
    assert not torch.allclose(p.ws[0], p.ws[1])
    with pytest.raises(ValueError, match="batch"):
        linear_prompts(0, 3, 2, torch.Generator())


def test_interleave_alternates_x_and_y_tokens():
    p = prompts(batch=2, k=3, d=2)
    tokens = interleave(p.xs, p.ys)
    assert tokens.shape == (2, 6, 3)
    torch.testing.assert_close(tokens[:, 0::2, :2], p.xs)
    torch.testing.assert_close(tokens[:, 1::2, 2], p.ys)
    assert (tokens[:, 0::2, 2] == 0).all() and (tokens[:, 1::2, :2] == 0).all()


def test_least_squares_is_exact_once_there_are_d_examples():
    p = prompts(d=3)
    err = normalized_error(least_squares(p.xs, p.ys), p.ys, 3)
    assert err[0] == pytest.approx(
        normalized_error(torch.zeros_like(p.ys), p.ys, 3)[0].item()
    )  # no data: predicts 0
    assert (err[4:] < 1e-8).all()  # noiseless: from d examples on, w is determined
    assert err[1] > 0.3  # one example cannot pin down three weights


def test_averaging_and_nearest_neighbours_by_hand():
    p = prompts(batch=1, k=5, d=2)
    xs, ys = p.xs[0], p.ys[0]
    w_hat = (ys[:3, None] * xs[:3]).mean(0)
    assert averaging(p.xs, p.ys)[0, 3].item() == pytest.approx((w_hat @ xs[3]).item(), rel=1e-5)
    dist = (xs[:4] - xs[4]).norm(dim=1)
    nearest = dist.argsort()[:3]
    assert nearest_neighbours(p.xs, p.ys)[0, 4].item() == pytest.approx(
        ys[nearest].mean().item(), rel=1e-5
    )
    assert nearest_neighbours(p.xs, p.ys)[0, 0] == 0 and averaging(p.xs, p.ys)[0, 0] == 0
    with pytest.raises(ValueError, match="n must"):
        nearest_neighbours(p.xs, p.ys, n=0)


def test_averaging_is_one_gradient_step_from_zero():
    p = prompts(batch=4, k=9, d=3)
    for i in (1, 4, 8):  # predict y_i from the i pairs before it
        w = torch.zeros(4, 3, requires_grad=True)
        loss = 0.5 * ((p.xs[:, :i] * w[:, None]).sum(-1) - p.ys[:, :i]).square().mean(1).sum()
        loss.backward()
        step = -w.grad  # w_1 = w_0 - 1 * grad, w_0 = 0
        torch.testing.assert_close(averaging(p.xs, p.ys)[:, i], (step * p.xs[:, i]).sum(-1))


def test_least_squares_is_the_posterior_mean_before_d_examples():
    # with fewer examples than dimensions the minimum-norm fit is the projection of w onto the
    # span of the x_j, which for w ~ N(0, I) is E[w | data]: its error is (d - i) / d on average
    p = prompts(batch=20000, k=3, d=4)
    err = normalized_error(least_squares(p.xs, p.ys), p.ys, 4)
    for i in (1, 2):
        assert err[i].item() == pytest.approx((4 - i) / 4, abs=0.03)


def test_zero_prediction_scores_about_one():
    p = prompts(batch=4000, k=2, d=5)
    err = normalized_error(torch.zeros_like(p.ys), p.ys, 5)
    assert err.mean().item() == pytest.approx(1.0, abs=0.05)


def test_regressor_is_causal_and_checks_its_inputs():
    torch.manual_seed(0)
    model = InContextRegressor(d=3, max_points=8, n_layer=2, n_head=2, n_embd=16).eval()
    p = prompts(batch=2, k=8, d=3)
    out = model(p.xs, p.ys)
    assert out.shape == (2, 8)
    # changing y_5 and everything after it cannot change predictions 0..5
    # (prediction i sees x_i, not y_i)
    ys = p.ys.clone()
    ys[:, 5:] += 10.0
    xs = p.xs.clone()
    xs[:, 6:] += 10.0
    torch.testing.assert_close(model(xs, ys)[:, :6], out[:, :6])
    assert not torch.allclose(model(xs, ys)[:, 6:], out[:, 6:])
    with pytest.raises(ValueError, match="max_points"):
        model(*[t.repeat(1, 2, *([1] * (t.ndim - 2))) for t in (p.xs, p.ys)])
    with pytest.raises(ValueError, match="dimension"):
        model(torch.zeros(1, 2, 4), torch.zeros(1, 2))


def test_prompts_come_from_the_generator_and_move_to_the_device():
    p = linear_prompts(
        5, 4, 3, torch.Generator(device=torch.device("cpu")).manual_seed(7), device="cpu"
    )
    g = torch.Generator().manual_seed(7)
    torch.testing.assert_close(p.ws, torch.randn(5, 3, generator=g), rtol=0, atol=0)
    torch.testing.assert_close(p.xs, torch.randn(5, 4, 3, generator=g), rtol=0, atol=0)
    again = linear_prompts(
        5, 4, 3, torch.Generator(device="cpu").manual_seed(7), device=torch.device("cpu")
    )
    assert torch.equal(p.ys, again.ys)


def test_recipe_config_is_flat_plain_numbers_and_depends_on_the_budget_given():
    test, full = icl_config("test"), icl_config("full")
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in full.values())
    assert {k: v for k, v in test.items() if k != "steps"} == {
        k: v for k, v in full.items() if k != "steps"
    }
    assert (test["steps"], full["steps"]) == (800, 5000)
    assert zoo.recipe("icl-linear") is ICL_RECIPE
    assert (ICL_RECIPE.config, ICL_RECIPE.build, ICL_RECIPE.train) == (
        icl_config,
        build_icl,
        train_icl,
    )
    model = build_icl(test)
    assert isinstance(model, InContextRegressor) and len(model.blocks) == test["n_layer"]
    assert model.read_in.out_features == test["n_embd"] and model.max_points == test["max_points"]


def test_train_icl_is_seeded_by_its_config():
    config = {
        **icl_config("test"),
        "steps": 10,
        "n_layer": 1,
        "n_embd": 16,
        "max_points": 8,
        "train_points": 8,
        "batch_size": 8,
    }
    runs = []
    for _ in range(2):
        torch.manual_seed(1)  # the same initial weights
        model = build_icl(config)
        meta = train_icl(model, config)
        runs.append((meta["train_loss"], model.read_out.weight.detach().clone()))
        assert meta["step"] == list(range(1, 11)) and meta["seconds"] > 0
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])  # the same run twice
    torch.manual_seed(1)
    assert not torch.equal(runs[0][1], build_icl(config).read_out.weight)  # and it trained
