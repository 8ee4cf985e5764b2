import dataclasses
import json

import pytest
import torch

from fmbook import lm
from fmbook.objectives import next_token_loss
from fmbook.transformer import BERT, GPT, GPTConfig


def test_tuning_and_test_plays_split_the_held_out_plays():
    data = lm.char_data()
    assert set(lm.TUNING_PLAYS).isdisjoint(lm.TEST_PLAYS)
    assert len(data.tune_ids) + len(data.test_ids) + 1 == len(data.val_ids)  # joined by one newline
    probe = data.test_ids[1000:1100]
    windows = data.tune_ids.unfold(0, len(probe), 97)
    assert not (windows == probe).all(dim=1).any()  # no test text among the tuning plays


@pytest.mark.parametrize("budget", ["test", "full"])
def test_the_recipes_are_a_controlled_pair(budget):
    gpt, bert = lm.gpt_config(budget), lm.bert_config(budget)
    assert {k for k in gpt if gpt[k] != bert[k]} == {"vocab_size", "lr"}
    assert bert["vocab_size"] == gpt["vocab_size"] + 1 == lm.char_data().mask_id + 1
    assert lm.training_flops(gpt) == lm.training_flops(bert)
    assert not any(isinstance(v, dict) for v in gpt.values())  # one flat dict


def test_the_budgets_change_size_and_steps_only():
    test, full = lm.gpt_config("test"), lm.gpt_config("full")
    assert {k for k in test if test[k] != full[k]} == {"n_layer", "n_embd", "steps"}
    assert test["steps"] < full["steps"] and test["n_embd"] < full["n_embd"]


def test_build_functions_give_the_recipes_models():
    gpt_config, bert_config = lm.gpt_config("test"), lm.bert_config("test")
    gpt, bert = lm.build_gpt(gpt_config), lm.build_bert(bert_config)
    assert type(gpt) is GPT and type(bert) is BERT and gpt.causal and not bert.causal
    for model, config in ((gpt, gpt_config), (bert, bert_config)):
        assert all(config[k] == v for k, v in dataclasses.asdict(model.config).items())
    assert lm.GPT_RECIPE.name == "gpt-shakespeare" and lm.BERT_RECIPE.name == "bert-shakespeare"
    assert lm.GPT_RECIPE.train is lm.train_gpt and lm.BERT_RECIPE.build is lm.build_bert


def test_learning_rates_are_the_sweeps_best_on_the_same_grid():
    sweep = json.loads(lm.LR_SWEEP_FILE.read_text())
    assert (
        sorted(map(float, sweep["gpt"]))
        == sorted(map(float, sweep["bert"]))
        == sorted(sweep["grid"])
    )
    for kind, config in (("gpt", lm.gpt_config()), ("bert", lm.bert_config())):
        best = min(sweep[kind].items(), key=lambda kv: kv[1])
        assert config["lr"] == float(best[0]) == lm.chosen_lr(kind)


def test_training_flops_is_six_n_d():
    config = lm.gpt_config()
    model = lm.build_gpt(config)
    n = sum(
        p.numel()
        for name, p in model.named_parameters()
        if name not in ("wte.weight", "wpe.weight")
    )
    d = config["steps"] * config["batch_size"] * config["block_size"]
    assert lm.training_flops(config) == 6 * n * d


def test_tuning_loss_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        lm.tuning_loss("t5", lm.build_gpt(lm.gpt_config("test")))


def test_batch_loss_is_each_models_own_loss():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)
    gpt, bert = GPT(config), BERT(config)
    x = torch.randint(10, (2, 8))
    labels = torch.full_like(x, -100)
    labels[:, 3] = x[:, 3]
    logits = gpt(x)[0]
    torch.testing.assert_close(lm.batch_loss(gpt, (x, x)), next_token_loss(logits, x))
    only_pos_3 = torch.nn.functional.cross_entropy(bert(x)[0][:, 3], x[:, 3])
    torch.testing.assert_close(lm.batch_loss(bert, (x, labels)), only_pos_3)


def test_tuning_loss_is_each_models_own_loss_on_the_tuning_plays():
    data = lm.char_data()
    torch.manual_seed(0)
    for kind, cls, own in (("gpt", GPT, lm.gpt_val_loss), ("bert", BERT, lm.bert_val_loss)):
        vocab = data.vocab_size + (kind == "bert")
        model = cls(
            GPTConfig(vocab_size=vocab, block_size=16, n_layer=1, n_head=2, n_embd=16)
        ).eval()
        tuned = lm.tuning_loss(kind, model, n=64)
        assert tuned == own(model, 64, ids=data.tune_ids)
        assert tuned != own(model, 64, ids=data.test_ids)


def test_head_to_head_scores_each_hidden_character_one_at_a_time():
    data = lm.char_data()
    torch.manual_seed(0)
    config = dict(vocab_size=data.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16)
    gpt = GPT(GPTConfig(**config)).eval()
    bert = BERT(GPTConfig(**{**config, "vocab_size": data.vocab_size + 1})).eval()
    bert_right, gpt_right = lm.head_to_head(bert, gpt, data.test_ids, n=40, batch=16)
    x, position, truth = lm.hidden_characters(data.test_ids, 40)
    assert ((position >= 32) & (position < 64)).all() and torch.equal(
        truth, x[torch.arange(40), position]
    )
    with torch.no_grad():
        for i in range(40):
            t = position[i].item()
            masked = x[i : i + 1].clone()
            masked[0, t] = data.mask_id
            assert bert_right[i] == float(bert(masked)[0][0, t].argmax() == truth[i])
            assert gpt_right[i] == float(gpt(x[i : i + 1, :t])[0][0, -1].argmax() == truth[i])


def test_trained_shows_the_cached_runs_curves_once(monkeypatch):
    meta = {
        "step": [1, 2],
        "train_loss": [3.0, 2.0],
        "eval_step": [2],
        "eval_loss": [2.5],
        "seconds": 1.0,
    }
    drawn = []
    monkeypatch.setattr(lm.LossPlot, "finish", lambda self, history: drawn.append(history))
    for cached in (True, False):
        loaded = ("model", dict(meta, cached=cached))
        monkeypatch.setattr(lm.zoo, "load", lambda *a, loaded=loaded, **k: loaded)
        assert lm.trained("gpt-shakespeare", loss_plot=True)[0] == "model"
    # only the cached model draws: a model trained now has just shown its curves
    assert len(drawn) == 1 and drawn[0].eval_loss == [2.5]
    with pytest.raises(ValueError, match="name"):
        lm.trained("t5-shakespeare")


def test_gpt_window_losses_average_to_the_validation_loss():
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=lm.char_data().vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16
    )
    model = GPT(config).eval()
    losses = lm.gpt_window_losses(model, n=128)
    assert losses.shape == (128,) and losses.dtype == torch.float64
    assert losses.mean().item() == pytest.approx(lm.gpt_val_loss(model, n=128), rel=1e-5)
