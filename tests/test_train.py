import math

import pytest
import torch

import fmbook
from fmbook.train import History, fit, fit_cosine, lr_at


def regression_setup():
    fmbook.seed(0)
    w_true = torch.tensor([[2.0, -3.0]])
    model = torch.nn.Linear(2, 1)
    gen = torch.Generator().manual_seed(0)

    def batch():
        x = torch.randn(64, 2, generator=gen)
        return x, x @ w_true.T + 0.5

    def loss_fn(m, b):
        x, y = b
        return torch.nn.functional.mse_loss(m(x), y)

    return model, loss_fn, batch


def test_fit_learns_and_records_history(capsys):
    model, loss_fn, batch = regression_setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    evals = []
    history = fit(
        model, loss_fn, batch, opt, 200, eval_fn=lambda m: evals.append(1) or 0.0, eval_every=50
    )
    assert history.steps_done == 200 and history.step[-1] == 200
    assert history.train_loss[-1] < 1e-3 < history.train_loss[0]
    assert history.eval_step == [50, 100, 150, 200] and len(evals) == 4
    assert not history.interrupted and history.seconds > 0
    assert "200/200 steps" in capsys.readouterr().out


def test_eval_runs_in_eval_mode_without_grad():
    model, loss_fn, batch = regression_setup()
    seen = []

    def eval_fn(m):
        seen.append((m.training, torch.is_grad_enabled()))
        return 1.0

    fit(
        model,
        loss_fn,
        batch,
        torch.optim.SGD(model.parameters(), lr=0.1),
        4,
        eval_fn=eval_fn,
        eval_every=2,
    )
    assert seen == [(False, False), (False, False)]
    assert model.training


def test_warmup_cosine_schedule_values():
    assert lr_at(0, 100, warmup=10) == pytest.approx(0.1)
    assert lr_at(9, 100, warmup=10) == pytest.approx(1.0)
    assert lr_at(10, 100, warmup=10) == pytest.approx(1.0)
    mid = 10 + 45  # half-way through the decay: cos(pi/2) = 0
    assert lr_at(mid, 100, warmup=10, min_ratio=0.1) == pytest.approx(0.1 + 0.45)
    assert lr_at(100, 100, warmup=10, min_ratio=0.1) == pytest.approx(0.1)
    values = [lr_at(s, 100, 10) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_fit_applies_schedule_to_optimizer():
    model, loss_fn, batch = regression_setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    history = fit(model, loss_fn, batch, opt, 20, warmup=5, schedule="cosine", min_lr_ratio=0.0)
    assert history.lr[0] == pytest.approx(0.2 / 5)
    assert history.lr[4] == pytest.approx(0.2)
    assert history.lr[-1] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 14 / 15)))


def test_gradient_clipping_bounds_the_update():
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    loss_fn = lambda m, b: (m(b) * 1e6).sum()
    fit(model, loss_fn, lambda: torch.ones(1, 1), opt, 1, grad_clip=0.5, plot=False)
    assert model.weight.abs().item() == pytest.approx(0.5)


def test_keyboard_interrupt_returns_model_and_history_so_far(capsys):
    model, loss_fn, batch = regression_setup()
    calls = {"n": 0}

    def interrupting(m, b):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return loss_fn(m, b)

    history = fit(model, interrupting, batch, torch.optim.SGD(model.parameters(), lr=0.1), 100)
    assert history.interrupted and history.steps_done == 5
    assert "interrupted" in capsys.readouterr().out


def test_non_finite_loss_is_reported_with_its_step():
    model = torch.nn.Linear(1, 1)
    loss_fn = lambda m, b: m(b).sum() * float("nan")
    with pytest.raises(FloatingPointError, match="step 0"):
        fit(
            model, loss_fn, lambda: torch.ones(1, 1), torch.optim.SGD(model.parameters(), lr=0.1), 3
        )


def test_iterable_batches_that_run_out():
    model, loss_fn, batch = regression_setup()
    with pytest.raises(ValueError, match="ran out"):
        fit(model, loss_fn, [batch(), batch()], torch.optim.SGD(model.parameters(), lr=0.1), 3)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"steps": 0}, "steps"),
        ({"schedule": "linear"}, "schedule"),
        ({"warmup": 5}, "warmup"),
        ({"warmup": 50, "schedule": "cosine"}, "warmup"),
        ({"eval_every": 2}, "eval_fn"),
        ({"grad_clip": 0.0}, "grad_clip"),
    ],
)
def test_fit_rejects_bad_arguments(kw, match):
    model, loss_fn, batch = regression_setup()
    args = {"steps": 10} | kw
    with pytest.raises(ValueError, match=match):
        fit(model, loss_fn, batch, torch.optim.SGD(model.parameters(), lr=0.1), **args)


def test_fit_rejects_wrong_types():
    model, loss_fn, batch = regression_setup()
    with pytest.raises(TypeError, match="Module"):
        fit(object(), loss_fn, batch, torch.optim.SGD(model.parameters(), lr=0.1), 1)
    with pytest.raises(TypeError, match="batches"):
        fit(model, loss_fn, 3, torch.optim.SGD(model.parameters(), lr=0.1), 1)


def test_history_helpers():
    h = History(step=[1, 2, 3], train_loss=[3.0, 2.0, 1.0])
    assert h.last_train_loss(2) == 1.5
    assert math.isnan(h.final_eval_loss)


def test_history_as_meta_is_plain_and_a_copy():
    model, loss_fn, batch = regression_setup()
    history = fit(model, loss_fn, batch, torch.optim.SGD(model.parameters(), lr=0.1), 5, plot=False)
    meta = history.as_meta()
    assert set(meta) == {"step", "train_loss", "seconds"}
    assert meta["step"] == [1, 2, 3, 4, 5] and meta["train_loss"] == history.train_loss
    assert meta["seconds"] == history.seconds > 0
    meta["step"].append(6)
    assert history.step == [1, 2, 3, 4, 5]


def test_fit_cosine_is_adamw_with_warmup_cosine_decay_and_clipping():
    model, loss_fn, batch = regression_setup()
    config = {"lr": 0.05, "steps": 40}
    ours = fit_cosine(
        model,
        loss_fn,
        batch,
        config,
        warmup=4,
        title="t",
    ).train_loss
    model, loss_fn, batch = regression_setup()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.0)
    theirs = fit(
        model, loss_fn, batch, optimizer, 40, warmup=4, schedule="cosine", grad_clip=1.0, title="t"
    ).train_loss
    assert ours == theirs and len(ours) == 40


def test_history_curves_holds_both_curves_and_the_time():
    history = History(
        step=[1, 2], train_loss=[3.0, 2.0], eval_step=[2], eval_loss=[2.5], seconds=4.0
    )
    assert history.curves() == {
        "step": [1, 2],
        "train_loss": [3.0, 2.0],
        "eval_step": [2],
        "eval_loss": [2.5],
        "seconds": 4.0,
    }
