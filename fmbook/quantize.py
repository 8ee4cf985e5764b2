r"""Quantization: storing a model's weights in 8 or 4 bits instead of 32.

The serving chapter (``book/06_serving/2_quantization``) quantizes the book's GPT.

**Symmetric integer quantization.** A group of weights :math:`w` (a row of a weight matrix, or a
block of ``group_size`` consecutive weights of a row) shares one scale

.. math:: s = \frac{\max |w|}{(q_{\max} - q_{\min}) / 2}, \qquad
    q = \mathrm{clamp}\big(\mathrm{round}(w \cdot s^{-1}),\ q_{\min},\ q_{\max}\big), \qquad
    \hat w = s\, q,

with :math:`[q_{\min}, q_{\max}] = [-128, 127]` for 8 bits and :math:`[-8, 7]` for 4. The scale
spreads :math:`[-\max|w|, \max|w|]` over the whole range of the integers, the convention of
PyTorch's symmetric observers (``torch.ao.quantization``), and ``round`` rounds half to even after
multiplying by the reciprocal of the scale, as PyTorch's kernels do, so :func:`quantize` gives the
integers that ``torch.fake_quantize_per_channel_affine`` and PyTorch's int8 modules store.
A scale below ``torch.finfo(torch.float32).eps`` (a group of zeros) is raised to it.

**Weight-only quantization.** :class:`QuantizedLinear` keeps the integers (two 4-bit ones packed
per byte, :func:`pack_int4`) and the scales, and computes :math:`y = x \hat W^\top + b` with
:math:`\hat W` rebuilt in float32 at every call: less memory, the same arithmetic.
:func:`quantize_model` swaps a model's ``nn.Linear`` layers for it.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "int_range",
    "scales",
    "quantize",
    "dequantize",
    "pack_int4",
    "unpack_int4",
    "QuantizedLinear",
    "quantize_model",
    "linear_names",
    "model_bytes",
    "relative_error",
    "pytorch_dynamic_int8",
]

_EPS = torch.finfo(torch.float32).eps


def int_range(bits: int) -> tuple[int, int]:
    """``(q_min, q_max)`` of a signed ``bits``-bit integer: ``(-2**(bits-1), 2**(bits-1) - 1)``."""
    if bits not in (4, 8):
        raise ValueError(f"int_range: bits must be 4 or 8, got {bits!r}")
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _groups(w: torch.Tensor, group_size: int | None, name: str) -> torch.Tensor:
    """``w (out, in)`` viewed as ``(out, in // group_size, group_size)``; one group per row if
    ``group_size`` is None."""
    if not isinstance(w, torch.Tensor) or w.ndim != 2 or not w.is_floating_point():
        got = f"{tuple(w.shape)} {w.dtype}" if isinstance(w, torch.Tensor) else type(w).__name__
        raise ValueError(f"{name}: expected a float weight matrix (out, in), got {got}")
    size = w.shape[1] if group_size is None else group_size
    if not isinstance(size, int) or size < 1 or w.shape[1] % size:
        raise ValueError(
            f"{name}: group_size must divide the {w.shape[1]} inputs of a row, got {group_size!r}"
        )
    return w.reshape(w.shape[0], w.shape[1] // size, size)


def scales(w: torch.Tensor, bits: int = 8, group_size: int | None = None) -> torch.Tensor:
    r""":math:`s = \max|w| / ((q_{\max} - q_{\min}) / 2)` for every group of ``w (out, in)``:
    shape ``(out, in // group_size)``, or ``(out,)`` with one group per row (per output
    channel)."""
    q_min, q_max = int_range(bits)
    groups = _groups(w, group_size, "scales")
    s = (groups.abs().amax(-1) / ((q_max - q_min) / 2)).clamp_min(_EPS)
    return s[:, 0] if group_size is None else s


def quantize(
    w: torch.Tensor, bits: int = 8, group_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(q, s)``: the integers :math:`q = \mathrm{clamp}(\mathrm{round}(w s^{-1}), q_{\min},
    q_{\max})` as int8 ``(out, in)`` and the scales of :func:`scales`."""
    q_min, q_max = int_range(bits)
    s = scales(w, bits, group_size)
    groups = _groups(w, group_size, "quantize")
    per_group = s[:, None] if group_size is None else s
    q = torch.round(groups * (1.0 / per_group[..., None])).clamp(q_min, q_max)
    return q.reshape(w.shape).to(torch.int8), s


def dequantize(q: torch.Tensor, s: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
    r""":math:`\hat w = s\, q`, each integer times the scale of its group: float32 ``(out, in)``."""
    if q.ndim != 2 or q.dtype != torch.int8:
        raise ValueError(f"dequantize: expected int8 (out, in), got {tuple(q.shape)} {q.dtype}")
    want = (q.shape[0],) if group_size is None else (q.shape[0], q.shape[1] // group_size)
    if tuple(s.shape) != want:
        raise ValueError(f"dequantize: scales must have shape {want}, got {tuple(s.shape)}")
    groups = _groups(q.float(), group_size, "dequantize")
    per_group = s[:, None] if group_size is None else s
    return (groups * per_group[..., None]).reshape(q.shape)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Two 4-bit integers in ``[-8, 7]`` per byte: ``(out, in)`` int8 to ``(out, in // 2)``
    uint8, the even column in the low four bits and the odd one in the high four."""
    if q.ndim != 2 or q.dtype != torch.int8 or q.shape[1] % 2:
        raise ValueError(
            f"pack_int4: expected int8 (out, in) with an even in, got {tuple(q.shape)} {q.dtype}"
        )
    if q.numel() and (q.min() < -8 or q.max() > 7):
        raise ValueError(f"pack_int4: values must lie in [-8, 7], got [{q.min()}, {q.max()}]")
    nibbles = (q.to(torch.int16) & 0xF).to(torch.uint8)  # two's complement in four bits
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`pack_int4`: ``(out, in // 2)`` uint8 to ``(out, in)`` int8."""
    if packed.ndim != 2 or packed.dtype != torch.uint8:
        raise ValueError(
            f"unpack_int4: expected uint8 (out, in // 2), got {tuple(packed.shape)} {packed.dtype}"
        )
    signed = packed.view(torch.int8)  # shifts of a signed integer keep its sign
    low, high = (signed << 4) >> 4, signed >> 4
    return torch.stack([low, high], dim=-1).reshape(packed.shape[0], -1)


class QuantizedLinear(nn.Module):
    r"""A linear layer whose weight is stored in ``bits`` bits: :math:`y = x \hat W^\top + b`.

    The integers live in a buffer (int8, or packed uint8 for 4 bits), the scales in float32;
    :math:`\hat W` is rebuilt from them at every call (weight-only quantization).
    """

    def __init__(self, linear: nn.Linear, bits: int = 8, group_size: int | None = None):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"QuantizedLinear: expected an nn.Linear, got {type(linear).__name__}")
        self.bits, self.group_size = bits, group_size
        self.in_features, self.out_features = linear.in_features, linear.out_features
        q, s = quantize(linear.weight.detach().float(), bits, group_size)
        self.register_buffer("q", pack_int4(q) if bits == 4 else q)
        self.register_buffer("s", s)
        bias = linear.bias
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), False)

    def weight_hat(self) -> torch.Tensor:
        r""":math:`\hat W = s\, q`, float32 ``(out, in)``."""
        q = unpack_int4(self.q) if self.bits == 4 else self.q
        return dequantize(q, self.s, self.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_hat().to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        group = "per output channel" if self.group_size is None else f"groups of {self.group_size}"
        return f"{self.in_features} -> {self.out_features}, {self.bits} bits, {group}"


def linear_names(model: nn.Module) -> list[str]:
    """The names of ``model``'s ``nn.Linear`` layers whose weight is their own: a layer that
    shares its weight with an embedding (a tied output layer) is left out."""
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and id(m.weight) not in embedded
    ]


def quantize_model(
    model: nn.Module,
    bits: int = 8,
    group_size: int | None = None,
    layers: Iterable[str] | None = None,
) -> nn.Module:
    """A copy of ``model`` with the ``nn.Linear`` layers named in ``layers`` (default: every one of
    :func:`linear_names`) replaced by :class:`QuantizedLinear`; the original is unchanged."""
    names = linear_names(model)
    chosen = names if layers is None else list(layers)
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise ValueError(f"quantize_model: no linear layer named {unknown}; the model has {names}")
    quantized = copy.deepcopy(model)
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = quantized.get_submodule(parent_name)
        setattr(parent, child, QuantizedLinear(getattr(parent, child), bits, group_size))
    return quantized


def model_bytes(model: nn.Module) -> int:
    """The bytes of every parameter and buffer of ``model``, a shared tensor counted once."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.nbytes
    return total


def relative_error(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    r""":math:`\lVert \hat W - W \rVert_F / \lVert W \rVert_F`."""
    if w.shape != w_hat.shape:
        raise ValueError(
            f"relative_error: shapes differ, {tuple(w.shape)} and {tuple(w_hat.shape)}"
        )
    return ((w_hat - w).norm() / w.norm()).item()


def pytorch_dynamic_int8(model: nn.Module) -> nn.Module:
    """A CPU copy of ``model`` quantized by PyTorch's own int8 path: every ``nn.Linear`` stores
    int8 weights per output channel and multiplies in int8, activations quantized on the fly
    (``torch.ao.quantization.quantize_dynamic``). The layers are those of :func:`linear_names`, the
    ones :func:`quantize_model` quantizes.

    PyTorch announces that this path moves to the ``torchao`` package; its deprecation warnings
    are silenced here, in one place.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        cpu = copy.deepcopy(model).cpu().eval()
        spec = {name: per_channel_dynamic_qconfig for name in linear_names(cpu)}
        return quantize_dynamic(cpu, spec, dtype=torch.qint8)
