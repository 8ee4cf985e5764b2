r"""The transformer: attention, blocks, and one trunk with a causal and a masked head.

Pre-LayerNorm blocks as in GPT-2, learned position embeddings and an output
layer tied to the token embedding. :class:`Transformer` is the shared trunk,
built causal or bidirectional; :class:`GPT` (causal, next-token loss,
generation with a key/value cache) and :class:`BERT` (bidirectional,
masked-token loss, padding mask) are thin subclasses. The LLM chapter builds
each piece by hand and checks it against this file.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fmbook import sampling
from fmbook.objectives import masked_token_loss, next_token_loss


@dataclass
class GPTConfig:
    """Sizes of a :class:`GPT` or :class:`BERT`: vocabulary ``V``, context ``T``, ``L`` layers,
    ``H`` heads, width ``d``."""

    vocab_size: int
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self):
        for field in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{field} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig: n_embd={self.n_embd} must be divisible by n_head={self.n_head}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")


def causal_mask(T: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean ``(T, T)`` mask, True where query ``i`` may attend to key ``j``, i.e. ``j <= i``."""
    if T < 1:
        raise ValueError(f"causal_mask: T must be >= 1, got {T}")
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Attention, written out: returns the output and the attention weights.

    .. math::
        \mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}} + M\right)V

    ``q`` has shape ``(..., T_q, d_k)``, ``k`` ``(..., T_k, d_k)``, ``v``
    ``(..., T_k, d_v)``; ``mask`` is boolean, broadcastable to ``(..., T_q, T_k)``,
    True where attending is allowed (:math:`M = 0`) and False where it is not
    (:math:`M = -\infty`). Vaswani et al. (2017), section 3.2.1.
    """
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"attention: q (..., T_q, d_k), k (..., T_k, d_k), v (..., T_k, d_v) must agree; "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(
                f"attention: mask must be boolean (True = may attend), got {mask.dtype}"
            )
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


class KVCache:
    """Keys and values of the positions seen so far, one ``(k, v)`` pair per layer.

    With a cache, each generated token runs the projections and the MLP for
    the newest position only, instead of for the whole context again; its
    attention still reads every cached key and value.
    """

    def __init__(self, n_layer: int):
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer

    @property
    def length(self) -> int:
        first = self.layers[0]
        return 0 if first is None else first[0].shape[-2]

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        past = self.layers[layer]
        if past is None:
            # copies, not views: the keys and values of one forward pass are slices of the fused
            # query/key/value output, and a view would keep all of it (3 numbers for every 2 kept)
            k = k.clone(memory_format=torch.contiguous_format)
            v = v.clone(memory_format=torch.contiguous_format)
        else:
            k, v = torch.cat([past[0], k], dim=-2), torch.cat([past[1], v], dim=-2)
        self.layers[layer] = (k, v)
        return k, v


def _attention(q, k, v, mask, dropout_p: float) -> torch.Tensor:
    """PyTorch's fused attention kernel; on the CPU always in float32.

    Under bf16 autocast the CPU kernel's backward pass is several times slower in bf16 than in
    float32 (``benchmarks/profile_step.py``), so there the attention runs in float32 and the
    matrix products around it stay in bf16.
    """
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            y = F.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout_p
            )
        return y.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


class MultiHeadAttention(nn.Module):
    r"""Multi-head self-attention, causal (GPT) or bidirectional (BERT).

    :math:`\mathrm{head}_h = \mathrm{Attention}(XW^Q_h, XW^K_h, XW^V_h)`, the
    heads concatenated and projected by :math:`W^O`. The forward pass uses
    PyTorch's fused kernel; ``need_weights=True`` uses
    :func:`scaled_dot_product_attention` and also returns the weights.
    """

    def __init__(
        self, n_embd: int, n_head: int, causal: bool = True, dropout: float = 0.0, bias: bool = True
    ):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(
                f"MultiHeadAttention: n_embd={n_embd} must be divisible by n_head={n_head}"
            )
        self.n_head, self.causal, self.dropout = n_head, causal, dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        need_weights: bool = False,
        padding_mask: torch.Tensor | None = None,
    ):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, d_k)
        q, k, v = (z.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for z in (q, k, v))
        if cache is not None:
            k, v = cache.update(layer, k, v)
        T_k = k.shape[-2]
        mask = None
        if self.causal and (T > 1 or need_weights):
            # query i sits at absolute position T_k - T + i and may see keys 0 .. that position
            mask = causal_mask(T_k, x.device)[T_k - T :]
        if padding_mask is not None:  # (B, T_k), True for real tokens
            keys = padding_mask[:, None, None, :]
            mask = keys if mask is None else mask & keys
        if need_weights:
            y, weights = scaled_dot_product_attention(q, k, v, mask)
        else:
            y = _attention(q, k, v, mask, self.dropout if self.training else 0.0)
            weights = None
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        y = self.resid_dropout(self.proj(y))
        return (y, weights) if need_weights else y


class MLP(nn.Module):
    """The position-wise feed-forward network: ``Linear(d, 4d) -> GELU -> Linear(4d, d)``."""

    def __init__(self, n_embd: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """A pre-LayerNorm block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        *,
        causal: bool = True,
        dropout: float = 0.0,
        bias: bool = True,
    ):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = MultiHeadAttention(n_embd, n_head, causal, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x, cache=None, layer=0, need_weights=False, padding_mask=None):
        """The block's output; with ``need_weights=True``, ``(output, attention weights)``.

        ``cache``, ``layer``, ``need_weights`` and ``padding_mask`` go to
        :meth:`MultiHeadAttention.forward`.
        """
        y = self.attn(self.ln_1(x), cache, layer, need_weights, padding_mask)
        y, weights = y if need_weights else (y, None)
        x = x + y
        x = x + self.mlp(self.ln_2(x))
        return (x, weights) if need_weights else x


class Transformer(nn.Module):
    r"""The trunk shared by :class:`GPT` and :class:`BERT`, causal or not from construction on.

    Token and position embeddings, ``n_layer`` :class:`Block` s, a final LayerNorm and
    an output layer tied to the token embedding (Press & Wolf 2017):

    .. math:: h_0 = W_E[x] + W_P, \quad h_\ell = \mathrm{Block}_\ell(h_{\ell-1}), \quad
        z = \mathrm{LN}(h_L)\, W_E^\top.

    With ``causal=True`` position :math:`t` attends to positions :math:`\le t` only;
    with ``causal=False`` to the whole sequence. Nothing else differs.
    """

    def __init__(self, config: GPTConfig, *, causal: bool):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(
                f"{type(self).__name__}: expected a GPTConfig, got {type(config).__name__}"
            )
        self.config, self.causal = config, causal
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(
                config.n_embd,
                config.n_head,
                causal=causal,
                dropout=config.dropout,
                bias=config.bias,
            )
            for _ in range(config.n_layer)
        )
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2L)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, embeddings: bool = True) -> int:
        """The number of parameters, counted one of two ways.

        ``embeddings=True``: every parameter, the tied token embedding (which is also
        the output layer) counted once. Hoffmann et al. (2022) count parameters this
        way, so their compute-optimal "about 20 tokens per parameter" refers to it.

        ``embeddings=False``: without the token and position embeddings, the
        "non-embedding" :math:`N` of Kaplan et al. (2020), whose scaling laws use it.
        With tied weights the output layer goes with the token embedding.
        """
        n = sum(p.numel() for p in self.parameters())
        return n if embeddings else n - self.wte.weight.numel() - self.wpe.weight.numel()

    def _check_idx(self, idx: torch.Tensor, argname: str = "idx", start: int = 0) -> None:
        name, block = type(self).__name__, self.config.block_size
        if not isinstance(idx, torch.Tensor) or idx.ndim != 2:
            got = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise ValueError(f"{name}: {argname} must be a (batch, time) tensor, got {got}")
        if idx.dtype != torch.long:
            raise TypeError(f"{name}: {argname} must have dtype torch.long, got {idx.dtype}")
        if idx.shape[1] > block:
            raise ValueError(
                f"{name}: {argname} has length {idx.shape[1]}, longer than block_size={block}"
            )
        if start + idx.shape[1] > block:
            raise ValueError(
                f"{name}: the cache holds {start} positions; "
                f"{idx.shape[1]} more exceed block_size={block}"
            )

    def _check_targets(self, idx: torch.Tensor, targets: torch.Tensor | None, argname: str) -> None:
        if targets is not None and targets.shape != idx.shape:
            raise ValueError(
                f"{type(self).__name__}: {argname} must have the shape of idx {tuple(idx.shape)}, "
                f"got {tuple(targets.shape)}"
            )

    def _embed(self, idx: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Token plus position embeddings of ``idx``, its first token at position ``start``."""
        pos = torch.arange(start, start + idx.shape[1], device=idx.device)
        return self.wte(idx) + self.wpe(pos)

    def hidden(
        self,
        idx: torch.Tensor,
        cache: KVCache | None = None,
        padding_mask: torch.Tensor | None = None,
        maps: list | None = None,
    ) -> torch.Tensor:
        """Final hidden states ``(B, T, d)``, after the last LayerNorm: the output layer's input.

        ``cache`` continues cached positions; ``padding_mask`` ``(B, T)`` is True for real
        tokens; a list passed as ``maps`` receives each layer's attention weights.
        """
        start = cache.length if cache is not None else 0
        self._check_idx(idx, start=start)
        x = self.drop(self._embed(idx, start))
        for layer, block in enumerate(self.blocks):
            if maps is None:
                x = block(x, cache, layer, padding_mask=padding_mask)
            else:
                x, weights = block(x, cache, layer, need_weights=True, padding_mask=padding_mask)
                maps.append(weights)
        return self.ln_f(x)

    def features(self, idx: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states ``(B, T, d)``: the input of the output layer (see :meth:`hidden`)."""
        return self.hidden(idx, padding_mask=padding_mask)

    @torch.no_grad()
    def attention_maps(
        self, idx: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attention weights of every layer and head, kept by the ordinary forward pass.

        Shape ``(L, B, H, T, T)``: layer, batch, head, query position, key position.
        """
        maps: list[torch.Tensor] = []
        self.hidden(idx, padding_mask=padding_mask, maps=maps)
        return torch.stack(maps)


class GPT(Transformer):
    r"""A causal (decoder-only) transformer language model: the trunk with ``causal=True``.

    ``forward(idx, targets)`` returns the logits of
    :math:`p(x_{t+1} \mid x_{\le t})` at every position and, with targets, the
    next-token loss :math:`-\frac{1}{BT}\sum \log p(y_t \mid x_{\le t})`.
    """

    def __init__(self, config: GPTConfig):
        super().__init__(config, causal=True)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None
    ):
        """Logits ``(B, T, V)`` and, given ``targets``, the mean next-token cross-entropy.

        With a :class:`KVCache`, ``idx`` continues the cached positions: only
        the new tokens are computed, and the cache grows by ``T``.
        """
        logits = self.lm_head(self.hidden(idx, cache))
        self._check_targets(idx, targets, "targets")
        return logits, (next_token_loss(logits, targets) if targets is not None else None)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        stop: int | None = None,
    ) -> torch.Tensor:
        r"""Append ``max_new_tokens`` tokens, each sampled from :math:`\mathrm{softmax}(z / \tau)`.

        ``temperature`` :math:`\tau > 0` sharpens (< 1) or flattens (> 1) the
        distribution; ``top_k`` keeps the ``k`` most likely tokens; ``top_p``
        keeps the smallest set of most likely tokens whose probabilities sum to
        at least ``p`` (nucleus sampling, Holtzman et al. 2020).

        Without the cache every step recomputes the last ``block_size`` tokens.
        With it (``use_cache=True``) each step computes only the newest token;
        when the context fills the block, the cache restarts from the last
        ``block_size // 2`` tokens. Both give the same tokens as long as the
        whole sequence fits in ``block_size``.

        With a ``stop`` token (an end-of-text or end-of-line id), generation ends early once
        every sequence has produced it; up to each sequence's first ``stop`` the tokens are
        the same as without it.
        """
        self._check_sampling(idx, temperature, top_k, top_p, max_new_tokens, generator, "generate")
        if stop is not None and not 0 <= stop < self.config.vocab_size:
            raise ValueError(
                f"generate: stop must be a token id in [0, {self.config.vocab_size}), got {stop}"
            )
        was_training = self.training
        self.eval()
        done = None
        steps = self._steps(idx, max_new_tokens, temperature, top_k, top_p, generator, use_cache)
        for nxt in steps:
            idx = torch.cat([idx, nxt], dim=1)
            if stop is not None:
                done = nxt[:, 0] == stop if done is None else done | (nxt[:, 0] == stop)
                if bool(done.all()):
                    break
        self.train(was_training)
        return idx

    def stream(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> Iterator[torch.Tensor]:
        """Yield the ``max_new_tokens`` tokens of :meth:`generate` one step at a time, each
        ``(B, 1)`` as soon as it is sampled: the same tokens for the same ``generator``.

        A server streams a reply from it. The model must be in evaluation mode.
        """
        self._check_sampling(idx, temperature, top_k, top_p, max_new_tokens, generator, "stream")
        if self.training:
            raise ValueError("stream: the model is in training mode; call model.eval() first")
        return self._steps(idx, max_new_tokens, temperature, top_k, top_p, generator, use_cache)

    @torch.no_grad()
    def _steps(self, idx, max_new_tokens, temperature, top_k, top_p, generator, use_cache):
        block = self.config.block_size
        cache, fresh = None, idx[:, -block:]
        for _ in range(max_new_tokens):
            if use_cache:
                if cache is None or cache.length >= block:
                    keep = block // 2 if cache is not None else block
                    cache, fresh = KVCache(self.config.n_layer), idx[:, -keep:]
                logits, _ = self(fresh, cache=cache)
            else:
                logits, _ = self(idx[:, -block:])
            nxt = self._sample(logits[:, -1, :], temperature, top_k, top_p, generator)
            idx = torch.cat([idx, nxt], dim=1)
            fresh = nxt
            yield nxt

    def _check_sampling(self, idx, temperature, top_k, top_p, max_new_tokens, generator, name):
        if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or idx.shape[1] < 1:
            raise ValueError(f"{name}: idx must be a (batch, time) tensor with at least one token")
        self._check_idx(idx[:, -self.config.block_size :])
        sampling.check_temperature(temperature, name)
        sampling.check_top_k(top_k, name)
        sampling.check_top_p(top_p, name)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral):
            raise TypeError(
                f"{name}: max_new_tokens must be an int, got {type(max_new_tokens).__name__}"
            )
        if max_new_tokens < 0:
            raise ValueError(f"{name}: max_new_tokens must be >= 0, got {max_new_tokens}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"{name}: generator must be a torch.Generator or None, "
                f"got {type(generator).__name__}"
            )

    @staticmethod
    def _sample(logits, temperature, top_k, top_p, generator):
        """One token per row of ``logits`` ``(B, V)``: :func:`fmbook.sampling.sample`."""
        return sampling.sample(logits, temperature, top_k, top_p, generator)


class BERT(Transformer):
    r"""A bidirectional encoder trained to fill in masked tokens (Devlin et al. 2019).

    The trunk of :class:`GPT`, built with ``causal=False``: every position sees
    the whole sequence. ``forward(idx, labels, padding_mask)`` returns the logits
    at every position and the masked-token loss over the positions whose label
    is not ``-100``. It is not trained to write left to right: most hidden
    positions have context on both sides, so it continues a text less well than
    a causal model. Masked models can generate by filling in masks over several
    rounds instead (Wang & Cho 2019; Chang et al. 2022); this class does not.
    """

    def __init__(self, config: GPTConfig):
        super().__init__(config, causal=False)

    def forward(
        self,
        idx: torch.Tensor,
        labels: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
    ):
        """Logits ``(B, T, V)`` and, given ``labels``, the mean loss over the labelled positions."""
        logits = self.lm_head(self.hidden(idx, padding_mask=padding_mask))
        self._check_targets(idx, labels, "labels")
        return logits, (masked_token_loss(logits, labels) if labels is not None else None)

    def generate(self, *args, **kwargs):
        raise NotImplementedError(
            "fmbook's BERT has no left-to-right generate: it was trained to fill in masked tokens "
            "from both sides. Use fmbook.transformer.GPT for generation."
        )
