"""Device handling that must hold on CUDA and MPS, tested on the CPU.

The decisions (which device to draw on, whether two devices are the same, which dtype a tensor
takes on MPS) are pure functions of ``torch.device`` objects, so they are tested here with
devices this machine does not have.
"""

import pytest
import torch

from fmbook.runtime import as_device, draw_device, dtype_for, same_device, to_device
from fmbook.transformer import GPT, GPTConfig

# -- same_device ---------------------------------------------------------------------------------


def test_torch_device_equality_is_why_same_device_exists():
    # a generator made for "cuda" reports `cuda`, a tensor on it `cuda:0`; == calls them different
    assert torch.device("cuda") != torch.device("cuda:0")
    assert same_device(torch.device("cuda"), torch.device("cuda:0"))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("cuda", "cuda:0"),
        (torch.device("cuda:0"), "cuda"),
        ("cpu", torch.device("cpu")),
        ("cpu", "cpu:0"),
        ("mps", "mps:0"),
        (torch.Generator(device=torch.device("cpu")), "cpu"),
        (torch.Generator(device="cpu"), torch.zeros(1)),
    ],
)
def test_same_device_treats_no_index_as_the_current_device(a, b):
    assert same_device(a, b) and same_device(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("cpu", "cuda"),
        ("cpu", "cuda:0"),
        (torch.Generator(), torch.device("cuda")),
        ("cuda:0", "cuda:1"),
        ("cuda", "cuda:1"),  # no CUDA here, or current device 0
        ("mps", "cpu"),
        ("cuda", "mps"),
    ],
)
def test_same_device_tells_different_devices_apart(a, b, monkeypatch):
    if torch.cuda.is_available():
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert not same_device(a, b) and not same_device(b, a)


def test_same_device_follows_the_current_cuda_device(monkeypatch):
    # "cuda" means the current CUDA device; pretend it is device 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert same_device("cuda", "cuda:1")
    assert not same_device("cuda", "cuda:0")


def test_as_device_accepts_devices_strings_tensors_and_generators():
    assert as_device("cuda:1") == torch.device("cuda", 1)
    assert as_device(torch.device("mps")) == torch.device("mps")
    assert as_device(torch.zeros(1)) == torch.device("cpu")
    assert as_device(torch.Generator()) == torch.device("cpu")


def test_as_device_bad_input_says_what_was_expected():
    with pytest.raises(TypeError, match=r"expected a torch.device, a device string, .* got int 0"):
        as_device(0)
    with pytest.raises(TypeError, match="got NoneType"):
        same_device(None, "cpu")
    with pytest.raises(ValueError, match=r"'gpu' is not a device string such as 'cpu' or 'cuda:0'"):
        same_device("gpu", "cpu")


# -- draw_device ---------------------------------------------------------------------------------


def test_draw_device_is_the_generators_device_else_the_default():
    assert draw_device(torch.Generator(), "cuda") == torch.device("cpu")
    assert draw_device(torch.Generator(device=torch.device("cpu")), torch.device("mps")).type == "cpu"
    assert draw_device(None, "cuda:1") == torch.device("cuda", 1)
    assert draw_device(None, torch.device("mps")) == torch.device("mps")


def test_draw_device_rejects_what_is_not_a_generator():
    with pytest.raises(TypeError, match="expected a torch.Generator or None, got int"):
        draw_device(0, "cpu")


# -- MPS has no float64 --------------------------------------------------------------------------


def test_dtype_for_mps_turns_float64_into_float32_only():
    mps = torch.device("mps")
    assert dtype_for(mps, torch.float64) == torch.float32
    assert dtype_for("mps:0", torch.float64) == torch.float32
    assert dtype_for(mps, torch.float32) == torch.float32
    assert dtype_for(mps, torch.float16) == torch.float16
    assert dtype_for(mps, torch.long) == torch.long
    assert dtype_for(mps, torch.bool) == torch.bool
    for other in ("cpu", "cuda", torch.device("cuda:0"), "meta"):
        assert dtype_for(other, torch.float64) == torch.float64


def test_dtype_for_bad_input():
    with pytest.raises(TypeError, match="expected a torch.dtype, got str 'float64'"):
        dtype_for("mps", "float64")
    with pytest.raises(TypeError, match="got float"):
        dtype_for(1.5, torch.float64)


def test_to_device_keeps_dtype_and_values_off_mps():
    x = torch.tensor([0.1, 1 / 3], dtype=torch.float64)
    out = to_device(x, torch.device("cpu"))
    assert out.dtype == torch.float64 and torch.equal(out, x)
    meta = to_device(x, "meta")  # a device without data: the move happens, the dtype stays
    assert meta.device.type == "meta" and meta.dtype == torch.float64
    ids = torch.arange(3)
    assert to_device(ids, "cpu").dtype == torch.long


def test_to_device_converts_float64_before_it_moves_to_mps(monkeypatch):
    # no MPS needed: stand in for the copy to MPS and record the dtype that would arrive there
    real_to = torch.Tensor.to
    arrived = []

    def fake_to(self, *args, **kwargs):
        target = args[0] if args else kwargs.get("device")
        if isinstance(target, (torch.device, str)) and torch.device(target).type == "mps":
            arrived.append(self.dtype)
            return self
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    mps = torch.device("mps")
    out = to_device(torch.tensor([0.25, 0.5], dtype=torch.float64), mps)
    assert arrived == [torch.float32] and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([0.25, 0.5]))
    arrived.clear()
    assert to_device(torch.arange(2), mps).dtype == torch.long and arrived == [torch.long]
    arrived.clear()
    assert to_device(torch.ones(2, dtype=torch.float16), "mps").dtype == torch.float16
    assert arrived == [torch.float16]


def test_to_device_bad_input():
    with pytest.raises(TypeError, match="to_device: expected a torch.Tensor, got list"):
        to_device([1.0, 2.0], "cpu")
    with pytest.raises(ValueError, match="not a device string"):
        to_device(torch.zeros(1), "gpu")


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
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        _tiny_gpt().generate(torch.zeros(1, 2, dtype=torch.long), 3, generator=1)
