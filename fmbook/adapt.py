r"""Adapting a pretrained model to a task: classifiers on a backbone, LoRA, and the task data.

LoRA (Hu et al. 2021) freezes a weight matrix :math:`W_0` and learns a low-rank change,

.. math:: h = W_0 x + \frac{\alpha}{r} B A x, \qquad A \in \mathbb{R}^{r \times d_\text{in}},\
          B \in \mathbb{R}^{d_\text{out} \times r},

with :math:`B = 0` at the start, so that the adapted model starts out identical to the base model.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


class LoRALinear(nn.Module):
    r"""A frozen ``nn.Linear`` plus a trainable low-rank update :math:`\frac{\alpha}{r} B A`."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear: base must be an nn.Linear, got {type(base).__name__}")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"LoRALinear: rank must be an int >= 1, got {rank!r}")
        self.base, self.rank = base, rank
        self.alpha = float(rank if alpha is None else alpha)
        for p in base.parameters():
            p.requires_grad_(False)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.A = nn.Parameter(torch.empty(rank, base.in_features, **factory))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # as nn.Linear initialises its weight

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * (x @ self.A.T) @ self.B.T

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with :math:`W = W_0 + \\frac{\\alpha}{r} BA`: no extra cost at inference."""
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        out = out.to(self.base.weight.device, self.base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.scale * self.B @ self.A)
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def add_lora(model: nn.Module, targets: Sequence[str], rank: int, alpha: float | None = None) -> list[str]:
    """Freeze every parameter of ``model`` and wrap the linear layers named in ``targets`` with LoRA.

    A target matches a linear layer whose qualified name equals it or ends with ``"." + target``
    (``"attn.qkv"`` matches ``blocks.0.attn.qkv``, ``blocks.1.attn.qkv``, ...). Every target must
    match at least one ``nn.Linear``. Returns the names of the wrapped layers; only their
    ``A`` and ``B`` are trainable afterwards (add a fresh head after calling this).
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"add_lora: rank must be an int >= 1, got {rank!r}")
    if isinstance(targets, str) or not targets:
        raise ValueError(f"add_lora: targets must be a non-empty list of module names, got {targets!r}")
    linear = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    chosen = {}
    for target in targets:
        hits = [name for name in linear if name == target or name.endswith("." + target)]
        if not hits:
            raise ValueError(
                f"add_lora: no linear layer of the model is named {target!r}; "
                f"linear layers: {', '.join(sorted(linear)) or 'none'}"
            )
        chosen.update(dict.fromkeys(hits))
    for p in model.parameters():
        p.requires_grad_(False)
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(linear[name], rank, alpha))
    return [name for name in linear if name in chosen]  # in the model's order


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` numbers of parameters, each shared tensor counted once."""
    unique = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in unique if p.requires_grad), sum(p.numel() for p in unique)


def _real_positions(idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    if lengths.shape != (idx.shape[0],):
        raise ValueError(f"lengths must have shape ({idx.shape[0]},), got {tuple(lengths.shape)}")
    return torch.arange(idx.shape[1], device=idx.device)[None, :] < lengths.to(idx.device)[:, None]


class PooledClassifier(nn.Module):
    """Class logits from the mean of a backbone's final hidden states over the real (unpadded) positions."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"PooledClassifier: num_classes must be >= 2, got {num_classes}")
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.n_embd, num_classes)

    def features(self, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        real = _real_positions(idx, lengths).unsqueeze(-1).float()
        return (self.backbone.features(idx) * real).sum(1) / real.sum(1)

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(idx, lengths))


class SurprisalClassifier(nn.Module):
    r"""Class logits from what a causal language model *predicts*: the surprisal
    :math:`s_t = -\log p(x_t \mid x_{<t})` of every real character after the first, summarised by
    its ``top`` largest values and its mean, then a linear head.

    A misspelt word shows as a few very surprising characters, so these features carry the
    model's knowledge of spelling directly; gradients flow through them into the model when it is finetuned.
    """

    def __init__(self, lm: nn.Module, num_classes: int, top: int = 4):
        super().__init__()
        if num_classes < 2 or top < 1:
            raise ValueError(
                f"SurprisalClassifier: need num_classes >= 2 and top >= 1, got {num_classes}, {top}"
            )
        self.lm, self.top = lm, top
        self.head = nn.Linear(top + 1, num_classes)

    def features(self, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        real = _real_positions(idx, lengths)[:, 1:]
        logits = self.lm.lm_head(self.lm.features(idx))[:, :-1]
        surprisal = -torch.log_softmax(logits, dim=-1).gather(2, idx[:, 1:, None])[..., 0]
        surprisal = surprisal.masked_fill(~real, 0.0)
        top = surprisal.topk(self.top, dim=1).values
        mean = surprisal.sum(1, keepdim=True) / real.sum(1, keepdim=True).clamp(min=1)
        return torch.cat([top, mean], dim=1)

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(idx, lengths))


# -- the task: is the word order right? ---------------------------------------------------------


@dataclass(frozen=True)
class TextTask:
    """Passages with labels; ``ids`` are the passages encoded and padded to one length, ``lengths`` their real lengths."""

    texts: tuple[str, ...]
    labels: torch.Tensor
    ids: torch.Tensor
    lengths: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index) -> TextTask:
        index = torch.as_tensor(index, dtype=torch.long)
        return TextTask(
            tuple(self.texts[i] for i in index.tolist()),
            self.labels[index],
            self.ids[index],
            self.lengths[index],
            self.classes,
        )


def verse_lines(text: str, min_words: int = 6, max_chars: int = 64) -> list[str]:
    """Spoken lines of a play with at least ``min_words`` words and at most ``max_chars`` characters."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.endswith(":") or len(line) > max_chars or len(line.split()) < min_words:
            continue
        out.append(line)
    return out


def misspell(line: str, n_words: int, rng: random.Random) -> str | None:
    """The line with ``n_words`` of its words misspelt by swapping two neighbouring, different letters
    (``"thing"`` -> ``"hting"``); only words with at least four letters are touched. None if the line
    has too few such words."""
    if n_words < 1:
        raise ValueError(f"misspell: n_words must be >= 1, got {n_words}")
    words = line.split(" ")
    swaps = {}
    for i, w in enumerate(words):
        spots = [j for j in range(len(w) - 1) if w[j].isalpha() and w[j + 1].isalpha() and w[j] != w[j + 1]]
        if sum(ch.isalpha() for ch in w) >= 4 and spots:
            swaps[i] = spots
    if len(swaps) < n_words:
        return None
    for i in rng.sample(sorted(swaps), n_words):
        j = rng.choice(swaps[i])
        w = list(words[i])
        w[j], w[j + 1] = w[j + 1], w[j]
        words[i] = "".join(w)
    return " ".join(words)


def spelling_task(
    lines: Sequence[str], encode, length: int, pad_id: int, n_typos: int = 2, seed: int = 0
) -> TextTask:
    """Half the ``lines`` as written (label 1, "correct"), half with ``n_typos`` misspelt words (label 0),
    shuffled with ``seed``. Every passage is encoded with ``encode`` and padded with ``pad_id`` to ``length``."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i, line in enumerate(rng.sample(list(lines), len(lines))):
        text = line if i % 2 == 0 else misspell(line, n_typos, rng)
        if text is not None:
            texts.append(text)
            labels.append(int(i % 2 == 0))
    ids = torch.full((len(texts), length), pad_id, dtype=torch.long)
    lengths = torch.zeros(len(texts), dtype=torch.long)
    for row, text in enumerate(texts):
        encoded = encode(text)
        if len(encoded) > length:
            raise ValueError(f"spelling_task: {text!r} has {len(encoded)} tokens, more than length={length}")
        ids[row, : len(encoded)] = torch.tensor(encoded, dtype=torch.long)
        lengths[row] = len(encoded)
    return TextTask(tuple(texts), torch.tensor(labels), ids, lengths, ("misspelt", "correct"))


def few_shot(task: TextTask, k: int, seed: int) -> TextTask:
    """``k`` examples of every class drawn at random (without replacement) with ``seed``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"few_shot: k must be an int >= 1, got {k!r}")
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(len(task.classes)):
        members = torch.nonzero(task.labels == c).flatten()
        if k > len(members):
            raise ValueError(
                f"few_shot: k={k} examples of class {task.classes[c]!r} asked for, but the task has only {len(members)}"
            )
        chosen.append(members[torch.randperm(len(members), generator=g)[:k]])
    return task.subset(torch.cat(chosen))
