"""fmbook.quantize: scales, rounding and packing by hand, against PyTorch's own quantization."""

import pytest
import torch
from torch import nn

from fmbook import quantize as Q
from fmbook.transformer import GPT, GPTConfig


def test_int_range():
    assert Q.int_range(8) == (-128, 127)
    assert Q.int_range(4) == (-8, 7)
    with pytest.raises(ValueError, match="bits must be 4 or 8"):
        Q.int_range(3)


def test_int8_by_hand():
    w = torch.tensor([[1.0, -0.5, 0.25, 0.0], [-2.0, 0.1, 1.0, 0.02]])
    q, s = Q.quantize(w, 8)
    # s = max|w| / 127.5: 1/127.5 for row 0, 2/127.5 for row 1; q = round(w / s)
    torch.testing.assert_close(s, torch.tensor([1 / 127.5, 2 / 127.5]))
    # -0.5 * 127.5 = -63.75 -> -64, 0.25 * 127.5 = 31.875 -> 32, 0.1 * 63.75 = 6.375 -> 6;
    # the largest |w| lands on 127.5 less the rounding of the reciprocal 1/s: +-127
    assert q.tolist() == [[127, -64, 32, 0], [-127, 6, 64, 1]]
    assert q.dtype == torch.int8
    w_hat = Q.dequantize(q, s)
    assert (w_hat - w).abs().max() <= s.max() / 2 + 1e-7


def test_int4_groups_by_hand():
    w = torch.tensor([[1.0, -0.9, 0.5, 0.2], [0.0, 0.0, 3.0, -1.3]])
    q, s = Q.quantize(w, 4, group_size=2)
    # groups (1, -0.9), (0.5, 0.2), (0, 0), (3, -1.3); s = max|w| / 7.5, zeros get eps
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(s, torch.tensor([[1 / 7.5, 0.5 / 7.5], [eps, 3 / 7.5]]))
    # -0.9 * 7.5 = -6.75 -> -7, 0.2 * 15 = 3, -1.3 * 2.5 = -3.25 -> -3; each group's largest -> 7
    assert q.tolist() == [[7, -7, 7, 3], [0, 0, 7, -3]]
    torch.testing.assert_close(Q.dequantize(q, s, 2)[0, :2], torch.tensor([7 / 7.5, -7 / 7.5]))


@pytest.mark.parametrize("bits, group_size", [(8, None), (4, None), (4, 16), (8, 8)])
def test_matches_pytorch_fake_quantize(bits, group_size):
    """The integers and the rebuilt weights are PyTorch's, exactly, for every group size."""
    w = torch.randn(24, 64, generator=torch.Generator().manual_seed(0))
    q, s = Q.quantize(w, bits, group_size)
    q_min, q_max = Q.int_range(bits)
    size = group_size or w.shape[1]
    rows = w.reshape(-1, size)  # one row per group: PyTorch's per-channel op does the rest
    zero = torch.zeros(rows.shape[0], dtype=torch.int32)
    expected = torch.fake_quantize_per_channel_affine(rows, s.reshape(-1), zero, 0, q_min, q_max)
    assert torch.equal(Q.dequantize(q, s, group_size), expected.reshape(w.shape))


def test_int8_matches_pytorch_dynamic_quantization():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 16))
    quantized = Q.pytorch_dynamic_int8(model)
    for name in ("0", "2"):
        weight = quantized.get_submodule(name).weight()
        q, s = Q.quantize(model.get_submodule(name).weight.detach(), 8)
        assert torch.equal(weight.int_repr(), q)
        assert torch.equal(weight.q_per_channel_scales().float(), s)
    assert isinstance(model[0], nn.Linear)  # the original is untouched


def test_pack_int4_round_trip_and_layout():
    q = torch.tensor([[-8, 7, 0, -1]], dtype=torch.int8)
    packed = Q.pack_int4(q)
    # -8 is 0b1000 and 7 is 0b0111: 0x78; 0 and -1 (0b1111): 0xF0
    assert packed.tolist() == [[0x78, 0xF0]] and packed.dtype == torch.uint8
    every = torch.randint(
        -8, 8, (5, 32), dtype=torch.int8, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(Q.unpack_int4(Q.pack_int4(every)), every)
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        Q.pack_int4(torch.tensor([[8, 0]], dtype=torch.int8))
    with pytest.raises(ValueError, match="even"):
        Q.pack_int4(torch.zeros(2, 3, dtype=torch.int8))


def test_bad_inputs():
    with pytest.raises(ValueError, match="float weight matrix"):
        Q.quantize(torch.zeros(3), 8)
    with pytest.raises(ValueError, match="must divide the 10 inputs"):
        Q.quantize(torch.zeros(2, 10), 4, group_size=4)
    with pytest.raises(ValueError, match="scales must have shape"):
        Q.dequantize(torch.zeros(2, 4, dtype=torch.int8), torch.ones(3))
    with pytest.raises(TypeError, match="expected an nn.Linear"):
        Q.QuantizedLinear(nn.Conv1d(2, 2, 1))


def _gpt():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=32)
    return GPT(config).eval()


def test_quantize_model_swaps_own_linears_only():
    gpt = _gpt()
    names = Q.linear_names(gpt)
    assert "lm_head" not in names  # tied to the token embedding
    assert names == [f"blocks.{i}.{m}" for i in range(2) for m in Q_LAYER_NAMES]
    small = Q.quantize_model(gpt, 4, 16, layers=["blocks.1.mlp.fc"])
    assert isinstance(small.get_submodule("blocks.1.mlp.fc"), Q.QuantizedLinear)
    assert isinstance(small.get_submodule("blocks.0.mlp.fc"), nn.Linear)
    assert isinstance(gpt.get_submodule("blocks.1.mlp.fc"), nn.Linear)
    with pytest.raises(ValueError, match="no linear layer named"):
        Q.quantize_model(gpt, 8, layers=["lm_head"])


Q_LAYER_NAMES = ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")


@pytest.mark.parametrize("bits, group_size", [(8, None), (4, 16)])
def test_quantized_model_computes_with_the_rebuilt_weights(bits, group_size):
    gpt = _gpt()
    quantized = Q.quantize_model(gpt, bits, group_size)
    by_hand = _gpt()
    with torch.no_grad():
        for name in Q.linear_names(by_hand):
            layer = by_hand.get_submodule(name)
            q, s = Q.quantize(layer.weight, bits, group_size)
            layer.weight.copy_(Q.dequantize(q, s, group_size))
    idx = torch.randint(11, (3, 8))
    torch.testing.assert_close(quantized(idx)[0], by_hand(idx)[0])


def test_model_bytes():
    gpt = _gpt()
    linear = sum(gpt.get_submodule(n).weight.numel() for n in Q.linear_names(gpt))
    assert Q.model_bytes(gpt) == 4 * gpt.num_params()  # the tied weight once
    rows = sum(gpt.get_submodule(n).weight.shape[0] for n in Q.linear_names(gpt))
    # int8: one byte per weight and a float32 scale per row instead of four bytes per weight
    assert Q.model_bytes(Q.quantize_model(gpt, 8)) == Q.model_bytes(gpt) - 3 * linear + 4 * rows
    groups = linear // 16
    int4 = Q.model_bytes(Q.quantize_model(gpt, 4, 16))
    assert int4 == Q.model_bytes(gpt) - 4 * linear + linear // 2 + 4 * groups


def test_relative_error():
    w = torch.tensor([[3.0, 4.0]])
    assert Q.relative_error(w, torch.tensor([[3.0, 3.0]])) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="shapes differ"):
        Q.relative_error(w, torch.zeros(2, 1))
