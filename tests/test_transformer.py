import pytest
import torch

import fmbook
from fmbook.transformer import GPT, GPTConfig


def tiny(**kw):
    return GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16, **kw))


def test_shapes_and_loss_at_init_is_near_log_vocab():
    fmbook.seed(0)
    model = tiny()
    idx = torch.randint(11, (3, 16))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 16, 11)
    assert abs(loss.item() - torch.log(torch.tensor(11.0)).item()) < 0.3
    assert model(idx)[1] is None


def test_causal_past_logits_ignore_the_future():
    fmbook.seed(0)
    model = tiny().eval()
    a = torch.randint(11, (1, 16))
    b = a.clone()
    b[0, 10:] = (b[0, 10:] + 1) % 11
    torch.testing.assert_close(model(a)[0][:, :10], model(b)[0][:, :10])
    assert not torch.allclose(model(a)[0][:, 10:], model(b)[0][:, 10:])


def test_weights_are_tied():
    model = tiny()
    assert model.lm_head.weight is model.wte.weight


def test_generate_appends_and_respects_top_k_one_as_greedy():
    fmbook.seed(0)
    model = tiny()
    idx = torch.zeros(1, 3, dtype=torch.long)
    out = model.generate(idx, 20, top_k=1)
    assert out.shape == (1, 23) and torch.equal(out[:, :3], idx)
    again = model.generate(idx, 20, top_k=1)
    assert torch.equal(out, again)
    logits, _ = model(out[:, -16:-1])
    assert out[0, -1].item() == logits[0, -1].argmax().item()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"temperature": 0.0}, "temperature must be > 0"), ({"top_k": 0}, "top_k must be >= 1")],
)
def test_generate_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny().generate(torch.zeros(1, 2, dtype=torch.long), 3, **kwargs)


def test_forward_rejects_bad_input():
    model = tiny()
    with pytest.raises(ValueError, match="longer than block_size=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.long"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"\(batch, time\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="targets must have the shape"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n_embd": 15}, "divisible by n_head"),
        ({"n_layer": 0}, "n_layer must be a positive int"),
        ({"dropout": 1.0}, "dropout must be in"),
    ],
)
def test_config_rejects_bad_sizes(kw, match):
    args = {"vocab_size": 11, "n_head": 2, "n_embd": 16} | kw
    with pytest.raises(ValueError, match=match):
        GPTConfig(**args)
