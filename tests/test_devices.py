"""GPT sampling with a CPU generator gives the same tokens for every spelling of the CPU device
(fmbook.transformer; these tests belong in tests/test_transformer.py)."""

import pytest
import torch

from fmbook.transformer import GPT, GPTConfig

# -- sampling with a generator -------------------------------------------------------------------


def _tiny_gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16))


@pytest.mark.parametrize("spelling", [torch.device("cpu"), "cpu"])
def test_sample_draws_from_the_generator_like_multinomial(spelling):
    logits = torch.randn(4, 11, generator=torch.Generator().manual_seed(3))
    got = GPT._sample(logits, 0.7, None, None, torch.Generator(device=spelling).manual_seed(5))
    expected = torch.multinomial(
        torch.softmax(logits / 0.7, -1), 1, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(got, expected)


def test_generate_is_the_same_for_every_spelling_of_the_cpu_generator():
    model = _tiny_gpt()
    idx = torch.zeros(2, 3, dtype=torch.long)
    outs = [
        model.generate(idx, 12, generator=torch.Generator(device=spelling).manual_seed(1))
        for spelling in (torch.device("cpu"), "cpu", "cpu:0")
    ]
    assert outs[0].shape == (2, 15)
    assert all(torch.equal(outs[0], other) for other in outs[1:])
    different = model.generate(idx, 12, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(outs[0], different)  # the generator, not chance, decides


def test_generate_rejects_a_generator_that_is_not_one():
    with pytest.raises(TypeError, match="generator"):
        _tiny_gpt().generate(torch.zeros(1, 2, dtype=torch.long), 3, generator=1)
