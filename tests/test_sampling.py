import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fmbook import sampling, speculative
from fmbook.sampling import MAX_TEMPERATURE, MIN_TEMPERATURE
from fmbook.transformer import GPT, GPTConfig


def loud_gpt() -> GPT:
    """A tiny GPT with large weights: logits of tens, as a trained model has."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 1.0)
    return model


def test_probabilities_are_the_softmax_of_the_logits_over_the_temperature():
    torch.manual_seed(0)
    z = 5 * torch.randn(4, 11)
    for tau in (0.3, 1.0, 2.5):
        torch.testing.assert_close(sampling.probabilities(z, tau), torch.softmax(z / tau, -1))


def test_at_temperature_one_they_are_the_softmax_bit_for_bit():
    z = 7 * torch.randn(8, 50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sampling.probabilities(z), torch.softmax(z, -1))


@settings(max_examples=200, deadline=None)
@given(
    scale=st.floats(0, 1e30),
    log_tau=st.floats(math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.float64]),
)
def test_every_allowed_temperature_gives_a_distribution(scale, log_tau, seed, dtype):
    """softmax(z / tau) overflows for large |z| / tau; the shifted form never does, for any
    finite logits in any of the book's dtypes."""
    z = scale * torch.randn(
        3, 9, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    big = torch.finfo(dtype).max  # logits are finite numbers of the model's dtype
    z = z.clamp(-big, big).to(dtype)
    tau = min(max(math.exp(log_tau), MIN_TEMPERATURE), MAX_TEMPERATURE)
    p = sampling.probabilities(z, tau)
    assert p.dtype in (torch.float32, torch.float64)
    assert torch.isfinite(p).all() and (p >= 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(3, dtype=p.dtype))
    sampling.sample(z, tau, generator=torch.Generator().manual_seed(0))  # multinomial accepts it


def test_the_smallest_temperature_samples_greedily_where_the_naive_division_fails():
    model, idx = loud_gpt(), torch.randint(11, (2, 3), generator=torch.Generator().manual_seed(2))
    z = model(idx)[0][:, -1].detach()
    assert not torch.isfinite(z / MIN_TEMPERATURE).all()  # the overflow the shift avoids
    g = torch.Generator().manual_seed(0)
    out = model.generate(idx, 12, temperature=MIN_TEMPERATURE, generator=g)
    assert torch.equal(out, model.generate(idx, 12, top_k=1))
    flat = model.generate(idx, 12, temperature=MAX_TEMPERATURE, generator=g)
    assert flat.shape == (2, 15)


BAD_SAMPLING = [
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"temperature": -1.0}, "temperature must be > 0"),
    ({"temperature": float("nan")}, "temperature must be > 0 and finite"),
    ({"temperature": float("inf")}, "temperature must be > 0 and finite"),
    ({"temperature": 1e-300}, r"temperature must be between 1.18e-38 and 3.4e\+38"),
    ({"temperature": 1e300}, "temperature must be between"),
    ({"temperature": True}, "temperature must be a real number"),
    ({"temperature": "hot"}, "temperature must be a real number"),
    ({"top_k": 0}, "top_k must be >= 1"),
    ({"top_k": 2.5}, "top_k must be >= 1"),
    ({"top_k": True}, "top_k must be >= 1"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ({"top_p": float("nan")}, r"top_p must be in \(0, 1\]"),
    ({"top_p": True}, r"top_p must be in \(0, 1\]"),
]


@pytest.mark.parametrize("kwargs, words", BAD_SAMPLING)
def test_every_door_refuses_what_cannot_be_sampled_before_the_first_token(kwargs, words):
    model, idx = loud_gpt(), torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=f"generate: {words}"):
        model.generate(idx, 3, **kwargs)
    with pytest.raises(ValueError, match=f"stream: {words}"):
        model.stream(idx, 3, **kwargs)  # at the call, not at the first step
    with pytest.raises(ValueError, match=words):
        sampling.probabilities(torch.zeros(1, 11), **kwargs)
    if "temperature" in kwargs:
        with pytest.raises(ValueError, match=f"generate: {words}"):
            speculative.generate(model, model, idx, 3, k=2, temperature=kwargs["temperature"])


def test_max_new_tokens_must_be_a_whole_number():
    model, idx = loud_gpt(), torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(TypeError, match="max_new_tokens must be an int"):
        model.generate(idx, 2.0)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0"):
        model.generate(idx, -1)


def test_a_cpu_generator_draws_the_same_tokens_as_before():
    """sample draws where the generator lives, with torch.multinomial on the probabilities."""
    z = torch.randn(5, 11, generator=torch.Generator().manual_seed(3))
    want = torch.multinomial(torch.softmax(z, -1), 1, generator=torch.Generator().manual_seed(4))
    assert torch.equal(sampling.sample(z, generator=torch.Generator().manual_seed(4)), want)
