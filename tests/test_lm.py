import json

import pytest
import torch

from fmbook import lm
from fmbook.transformer import BERT, GPT, GPTConfig


def test_tuning_and_test_plays_split_the_held_out_plays():
    data = lm.char_data()
    assert set(lm.TUNING_PLAYS).isdisjoint(lm.TEST_PLAYS)
    assert len(data.tune_ids) + len(data.test_ids) + 1 == len(data.val_ids)  # joined by one newline
    probe = data.test_ids[1000:1100]
    windows = data.tune_ids.unfold(0, len(probe), 97)
    assert not (windows == probe).all(dim=1).any()  # no test text among the tuning plays


def test_the_recipes_are_a_controlled_pair(monkeypatch):
    for name in ("test", "full"):
        monkeypatch.setenv("FMBOOK_BUDGET", name)
        gpt, bert = lm.recipe_config("gpt"), lm.recipe_config("bert")
        differ = {k for k in gpt if gpt[k] != bert[k]}
        assert differ <= {"model", "lr"}
        model_differ = {k for k in gpt["model"] if gpt["model"][k] != bert["model"][k]}
        assert model_differ == {"vocab_size"} and bert["model"]["vocab_size"] == gpt["model"]["vocab_size"] + 1
        assert lm.training_flops(gpt) == lm.training_flops(bert)


def test_learning_rates_are_the_sweeps_best_on_the_same_grid():
    sweep = json.loads(lm.LR_SWEEP_FILE.read_text())
    assert sorted(map(float, sweep["gpt"])) == sorted(map(float, sweep["bert"])) == sorted(sweep["grid"])
    for kind in ("gpt", "bert"):
        best = min(sweep[kind].items(), key=lambda kv: kv[1])
        assert lm.recipe_config(kind)["lr"] == float(best[0]) == lm.chosen_lr(kind)
    assert lm.recipe_config("gpt", lr=1e-3)["lr"] == 1e-3


def test_training_flops_is_six_n_d():
    config = lm.recipe_config("gpt")
    model = lm._build("gpt")(config)
    n = sum(p.numel() for name, p in model.named_parameters() if name not in ("wte.weight", "wpe.weight"))
    d = config["steps"] * config["batch_size"] * config["model"]["block_size"]
    assert lm.training_flops(config) == 6 * n * d


def test_recipe_config_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        lm.recipe_config("t5")


def test_tuning_loss_is_each_models_own_loss_on_the_tuning_plays():
    data = lm.char_data()
    torch.manual_seed(0)
    for kind, cls, own in (("gpt", GPT, lm.gpt_val_loss), ("bert", BERT, lm.bert_val_loss)):
        vocab = data.vocab_size + (kind == "bert")
        model = cls(GPTConfig(vocab_size=vocab, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
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
    assert ((position >= 32) & (position < 64)).all() and torch.equal(truth, x[torch.arange(40), position])
    with torch.no_grad():
        for i in range(40):
            t = position[i].item()
            masked = x[i : i + 1].clone()
            masked[0, t] = data.mask_id
            assert bert_right[i] == float(bert(masked)[0][0, t].argmax() == truth[i])
            assert gpt_right[i] == float(gpt(x[i : i + 1, :t])[0][0, -1].argmax() == truth[i])
