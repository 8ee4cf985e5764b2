r"""Adapting a pretrained model to a task: features of a frozen model, probes, finetuning, LoRA,
and the label-efficiency figure.

A frozen model is read in two ways. Its **pooled hidden states** are the mean of its final hidden
states over a line, :math:`\bar h(x) = \frac{1}{L}\sum_{t=1}^{L} h_t(x)` (:func:`pooled_features`).
Its **own predictions** are the log-probabilities it gives to the characters of the line: for a
causal model :math:`\log p(x_t \mid x_{<t})` (:func:`next_token_log_probs`), for a masked model
the pseudo-log-likelihood terms :math:`\log p(x_t \mid x_{\setminus t})` of Salazar et al. (2020)
(:func:`pseudo_log_probs`), each summarised by :func:`likelihood_features`. A **probe**
(:func:`fit_probe`) is a logistic regression on such features, its regularisation chosen on a
validation split; :func:`finetune` trains weights with early stopping on that split. The task
data live in :mod:`fmbook.data.spelling`; two classifiers scored on the same test examples are
compared with :func:`fmbook.metrics.paired_bootstrap`.

LoRA (Hu et al. 2021) freezes a weight matrix :math:`W_0` and learns a low-rank change,

.. math:: h = W_0 x + \frac{\alpha}{r} B A x, \qquad A \in \mathbb{R}^{r \times d_\text{in}},\
          B \in \mathbb{R}^{d_\text{out} \times r},

with :math:`B = 0` at the start, so that the adapted model starts out identical to the base model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fmbook.data.spelling import TextTask


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
        r"""A plain ``nn.Linear`` with :math:`W = W_0 + \frac{\alpha}{r} BA`: no extra cost at
        inference."""
        out = nn.Linear(
            self.base.in_features, self.base.out_features, bias=self.base.bias is not None
        )
        out = out.to(self.base.weight.device, self.base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.scale * self.B @ self.A)
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def add_lora(
    model: nn.Module, targets: Sequence[str], rank: int, alpha: float | None = None
) -> list[str]:
    """Freeze every parameter of ``model`` and wrap the linear layers named in ``targets`` with
    LoRA.

    A target matches a linear layer whose qualified name equals it or ends with ``"." + target``
    (``"attn.qkv"`` matches ``blocks.0.attn.qkv``, ``blocks.1.attn.qkv``, ...). Every target must
    match at least one ``nn.Linear``. Returns the names of the wrapped layers; only their
    ``A`` and ``B`` are trainable afterwards (add a fresh head after calling this).
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"add_lora: rank must be an int >= 1, got {rank!r}")
    if isinstance(targets, str) or not targets:
        raise ValueError(
            f"add_lora: targets must be a non-empty list of module names, got {targets!r}"
        )
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
    """Class logits from the mean of a backbone's final hidden states over the real (unpadded)
    positions, then a linear head."""

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
    model's knowledge of spelling directly; gradients flow through them into the model when it
    is finetuned.
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
        # a causal model's predictions at the real positions never see the padding after them,
        # so the batch is cut to its longest passage: the same features, less compute
        if len(lengths):
            idx = idx[:, : min(idx.shape[1], max(int(lengths.max()), self.top + 1))]
        real = _real_positions(idx, lengths)[:, 1:]
        logits = self.lm.lm_head(self.lm.features(idx))[:, :-1]
        surprisal = -torch.log_softmax(logits, dim=-1).gather(2, idx[:, 1:, None])[..., 0]
        return likelihood_features(-surprisal.masked_fill(~real, 0.0), real.sum(1), self.top)

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(idx, lengths))


# -- reading a frozen model: pooled states and its own predictions -----------------------------


def likelihood_features(
    log_probs: torch.Tensor, n_scored: torch.Tensor, top: int = 4
) -> torch.Tensor:
    r"""Summary of a line's per-character log-probabilities: its ``top`` largest surprisals
    :math:`s_t = -\log p_t` and their mean over the ``n_scored`` scored characters.

    ``log_probs`` is ``(N, T)`` with 0 where a position has no score (padding, or the first
    character of a causal model); the result is ``(N, top + 1)``. The sum of the scored
    log-probabilities is the line's log-likelihood (or pseudo-log-likelihood):
    mean surprisal :math:`= -\frac{1}{n}\sum_t \log p_t`.
    """
    if log_probs.ndim != 2 or n_scored.shape != (log_probs.shape[0],):
        raise ValueError(
            f"likelihood_features: expected log_probs (N, T) and n_scored (N,), "
            f"got {tuple(log_probs.shape)} and {tuple(n_scored.shape)}"
        )
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= log_probs.shape[1]:
        raise ValueError(
            f"likelihood_features: top must be an int in [1, {log_probs.shape[1]}], got {top!r}"
        )
    surprisal = -log_probs
    mean = surprisal.sum(1, keepdim=True) / n_scored.to(surprisal)[:, None].clamp(min=1)
    return torch.cat([surprisal.topk(top, dim=1).values, mean], dim=1)


def _check_lines(ids: torch.Tensor, lengths: torch.Tensor, where: str) -> None:
    if ids.ndim != 2 or lengths.shape != (ids.shape[0],):
        raise ValueError(
            f"{where}: expected ids (N, T) and lengths (N,), "
            f"got {tuple(ids.shape)} and {tuple(lengths.shape)}"
        )
    if len(lengths) and (lengths.min() < 1 or lengths.max() > ids.shape[1]):
        raise ValueError(
            f"{where}: lengths must lie in [1, {ids.shape[1]}], "
            f"got {lengths.min()}..{lengths.max()}"
        )


def _length_groups(
    lengths: torch.Tensor, max_tokens: int, copies: bool = False
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(L, rows)``: the rows whose length is ``L``, in chunks of at most ``max_tokens`` tokens
    (``L`` per line, or ``L * L`` with ``copies``: one masked copy of the line per position)."""
    for length in torch.unique(lengths).tolist():
        rows = torch.nonzero(lengths == length).flatten()
        per_line = length * length if copies else length
        for chunk in rows.split(max(1, max_tokens // per_line)):
            yield length, chunk


@torch.no_grad()
def pooled_features(
    model: nn.Module, ids: torch.Tensor, lengths: torch.Tensor, max_tokens: int = 4096
) -> torch.Tensor:
    r"""Mean-pooled final hidden states of a frozen model, one row per line, on the CPU:

    .. math:: \bar h(x) = \frac{1}{L} \sum_{t=1}^{L} h_t(x),

    with :math:`h_t` the model's ``features`` (after its last LayerNorm). Lines are batched by
    length and fed without padding, so a bidirectional model's states do not depend on it.
    """
    _check_lines(ids, lengths, "pooled_features")
    device = next(model.parameters()).device
    out = torch.zeros(len(ids), model.config.n_embd)
    for length, rows in _length_groups(lengths, max_tokens):
        out[rows] = model.features(ids[rows, :length].to(device)).mean(1).float().cpu()
    return out


@torch.no_grad()
def next_token_log_probs(
    model: nn.Module, ids: torch.Tensor, lengths: torch.Tensor, max_tokens: int = 4096
) -> torch.Tensor:
    r"""A causal model's log-probability of every character given the ones before it,
    :math:`\log p(x_t \mid x_{<t})` for :math:`t = 2, \dots, L`, as ``(N, T)`` on the CPU
    (0 at the first character, which has no prediction, and at padding).
    Their sum is the line's log-likelihood beyond its first character.
    """
    _check_lines(ids, lengths, "next_token_log_probs")
    device = next(model.parameters()).device
    out = torch.zeros(ids.shape, dtype=torch.float32)
    for length, rows in _length_groups(lengths, max_tokens):
        x = ids[rows, :length].to(device)
        logp = torch.log_softmax(model(x)[0][:, :-1].float(), dim=-1).gather(2, x[:, 1:, None])[
            ..., 0
        ]
        out[rows, 1:length] = logp.cpu()
    return out


@torch.no_grad()
def pseudo_log_probs(
    model: nn.Module, ids: torch.Tensor, lengths: torch.Tensor, mask_id: int, max_tokens: int = 4096
) -> torch.Tensor:
    r"""A masked model's pseudo-log-likelihood terms (Salazar et al. 2020): position :math:`t`
    replaced by ``[MASK]`` and the model asked for the character that was there,

    .. math:: \mathrm{PLL}(x) = \sum_{t=1}^{L} \log p\big(x_t \mid x_{\setminus t}\big),

    returned term by term as ``(N, T)`` on the CPU (0 at padding). Vectorised: the ``L`` masked
    copies of a line (copy :math:`t` masked at :math:`t`) go through the model as one batch, with
    lines of the same length batched together and no padding.
    """
    _check_lines(ids, lengths, "pseudo_log_probs")
    vocab = model.config.vocab_size
    if isinstance(mask_id, bool) or not isinstance(mask_id, int) or not 0 <= mask_id < vocab:
        raise ValueError(
            f"pseudo_log_probs: mask_id must be an int in [0, {vocab}), got {mask_id!r}"
        )
    if (ids[_real_positions(ids, lengths)] == mask_id).any():
        raise ValueError(f"pseudo_log_probs: the lines already contain the mask id {mask_id}")
    device = next(model.parameters()).device
    out = torch.zeros(ids.shape, dtype=torch.float32)
    for length, rows in _length_groups(lengths, max_tokens, copies=True):
        x = ids[rows, :length].to(device)
        copies = x.repeat_interleave(length, dim=0)  # (lines * L, L): copy t of each line ...
        position = torch.arange(length, device=device).repeat(len(rows))
        which = torch.arange(len(copies), device=device)
        copies[which, position] = mask_id  # ... has its t-th character masked
        hidden = model.features(copies)[which, position]  # the state at the masked position
        logp = torch.log_softmax(model.lm_head(hidden).float(), dim=-1)
        out[rows, :length] = logp.gather(1, x.reshape(-1, 1))[:, 0].view(len(rows), length).cpu()
    return out


# -- probes, finetuning with early stopping, the label-efficiency figure ------------------------

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3)
"""Inverse regularisation strengths a probe chooses from on the validation split."""


@dataclass(frozen=True)
class Probe:
    """A fitted linear probe: its scikit-learn pipeline, the ``C`` it chose, its validation
    score."""

    pipeline: object
    C: float
    val_accuracy: float

    def predict(self, x) -> np.ndarray:
        return self.pipeline.predict(_as_inputs(x))

    @property
    def n_parameters(self) -> int:
        """Weights and biases of the logistic regression: what the probe learns."""
        regression = self.pipeline.steps[-1][1]
        return int(regression.coef_.size + regression.intercept_.size)

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The probe as the ``(weight, bias)`` of a two-class ``nn.Linear`` on the raw features.

        With the standardisation :math:`z = (x - \mu) / \sigma` folded in, the logits are
        :math:`(0,\; w^\top z + b)`, whose softmax is the probe's probability of class 1; a
        classifier's head set to them predicts what the probe predicts (linear probing, then
        finetuning, starts here).
        """
        scaler, regression = self.pipeline.steps[0][1], self.pipeline.steps[-1][1]
        if not hasattr(scaler, "scale_") or list(regression.classes_) != [0, 1]:
            raise ValueError(
                "Probe.linear_head: needs a standardised two-class probe with labels 0 and 1"
            )
        w = regression.coef_[0] / scaler.scale_
        b = regression.intercept_[0] - (w * scaler.mean_).sum()
        weight = torch.zeros(2, len(w), dtype=torch.float32)
        weight[1] = torch.as_tensor(w, dtype=torch.float32)
        return weight, torch.tensor([0.0, b], dtype=torch.float32)


def _as_inputs(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], str):
        return list(x)
    return np.asarray(x, dtype=np.float64)


def fit_probe(
    train_x, train_y, val_x, val_y, Cs: Sequence[float] = C_GRID, vectorizer=None
) -> Probe:
    r"""A linear probe: L2-regularised logistic regression on standardised features :math:`z_i`,
    labels :math:`y_i \in \{-1, 1\}`,

    .. math:: \min_{w, b}\; \tfrac{1}{2}\big(\lVert w\rVert^2 + b^2\big)
              + C \sum_i \log\big(1 + e^{-y_i (w^\top z_i + b)}\big)

    (scikit-learn's ``liblinear`` solver, which regularises the intercept :math:`b` too),
    fitted on ``train`` for every ``C`` in ``Cs``; the one with the best accuracy on the
    validation split wins (ties: the smaller ``C``, the stronger regularisation). With a
    scikit-learn ``vectorizer`` (say a ``TfidfVectorizer``) the inputs are texts and the vectorizer
    replaces the standardisation. The test set plays no part.
    """
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_x, val_x = _as_inputs(train_x), _as_inputs(val_x)
    train_y, val_y = np.asarray(train_y), np.asarray(val_y)
    if (
        len(train_x) != len(train_y)
        or len(val_x) != len(val_y)
        or not len(train_y)
        or not len(val_y)
    ):
        raise ValueError(
            f"fit_probe: need as many labels as inputs in both splits, "
            f"got {len(train_x)}/{len(train_y)} "
            f"and {len(val_x)}/{len(val_y)}"
        )
    if len(np.unique(train_y)) < 2:
        raise ValueError("fit_probe: the training split must hold at least two classes")
    if not Cs or min(Cs) <= 0:
        raise ValueError(f"fit_probe: Cs must be positive numbers, got {Cs!r}")
    best = None
    for C in sorted(Cs):
        first = StandardScaler() if vectorizer is None else clone(vectorizer)
        regression = LogisticRegression(C=C, solver="liblinear", max_iter=5000, random_state=0)
        pipeline = make_pipeline(first, regression).fit(train_x, train_y)
        score = float((pipeline.predict(val_x) == val_y).mean())
        if best is None or score > best.val_accuracy:
            best = Probe(pipeline, float(C), score)
    return best


def fit_probes(
    features: Mapping[str, torch.Tensor], part: Mapping, rows, labelled: TextTask, val: TextTask
) -> dict[str, Probe]:
    """One :func:`fit_probe` per feature set, all on the same few labelled lines.

    ``features[name]`` has a row for every line of the stacked splits and ``part[split]``
    the rows of each split (see :func:`fmbook.data.spelling.spelling_splits`); ``rows``
    picks the training lines within the labelled split. Each probe's ``C`` is chosen on
    the validation split.
    """
    y = labelled.labels[rows]
    return {
        name: fit_probe(f[part["labelled"]][rows], y, f[part["val"]], val.labels)
        for name, f in features.items()
    }


@torch.no_grad()
def predict(classifier: nn.Module, task: TextTask, batch_size: int = 64) -> torch.Tensor:
    """The class ``classifier`` gives to every passage of ``task``, on the CPU.

    Passages go through in order of length, so that a classifier that cuts a batch to its
    longest passage (:class:`SurprisalClassifier`) computes little padding; the result is in
    ``task``'s order.
    """
    device = next(classifier.parameters()).device
    classifier.eval()
    order = torch.argsort(task.lengths, stable=True)
    out = torch.empty(len(task), dtype=torch.long)
    for rows in order.split(batch_size):
        logits = classifier(task.ids[rows].to(device), task.lengths[rows].to(device))
        out[rows] = logits.argmax(1).cpu()
    return out


def _val_accuracy(classifier: nn.Module, val: TextTask) -> float:
    return (predict(classifier, val) == val.labels).float().mean().item()


@dataclass(frozen=True)
class FitLog:
    """What :func:`finetune` did: steps taken, the step it kept, that step's validation accuracy."""

    steps: int
    best_step: int
    val_accuracy: float


def finetune(
    classifier: nn.Module,
    train: TextTask,
    val: TextTask,
    *,
    head_lr: float,
    body_lr: float | None,
    max_steps: int,
    eval_every: int,
    patience: int,
    seed: int,
    batch_size: int = 32,
) -> FitLog:
    """Train ``classifier`` (a module with a ``head``) on ``train`` with AdamW and early stopping.

    Batches of ``batch_size`` passages are drawn with ``seed``; the head learns at ``head_lr``,
    every other trainable parameter at ``body_lr``. Every ``eval_every`` steps the accuracy on
    ``val`` is measured (and once before the first step); training stops after ``patience``
    evaluations without improvement (or at ``max_steps``), and the weights of the best evaluation
    are restored: the result is never worse on ``val`` than the classifier it started from.
    A step count, never a clock, decides how long it trains.
    """
    for name, value in (
        ("max_steps", max_steps),
        ("eval_every", eval_every),
        ("patience", patience),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"finetune: {name} must be an int >= 1, got {value!r}")
    if not len(train) or not len(val):
        raise ValueError(f"finetune: empty split (train {len(train)}, val {len(val)})")
    device = next(classifier.parameters()).device
    head = list(classifier.head.parameters())
    body = [
        p for n, p in classifier.named_parameters() if p.requires_grad and not n.startswith("head.")
    ]
    if body and body_lr is None:
        raise ValueError("finetune: the classifier has trainable body parameters; give body_lr")
    groups = [{"params": head, "lr": head_lr}] + ([{"params": body, "lr": body_lr}] if body else [])
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    best, best_step, best_state = (
        _val_accuracy(classifier, val),
        0,
        copy.deepcopy(classifier.state_dict()),
    )
    waited, step = 0, 0
    while step < max_steps and waited < patience:
        classifier.train()
        for _ in range(min(eval_every, max_steps - step)):
            i = torch.randint(0, len(train), (min(batch_size, len(train)),), generator=g)
            logits = classifier(train.ids[i].to(device), train.lengths[i].to(device))
            loss = nn.functional.cross_entropy(logits, train.labels[i].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        score = _val_accuracy(classifier, val)
        if score > best:
            best, best_step, waited = score, step, 0
            best_state = copy.deepcopy(classifier.state_dict())
        else:
            waited += 1
    classifier.load_state_dict(best_state)
    classifier.eval()
    return FitLog(step, best_step, best)


def plot_label_efficiency(
    correct: Mapping[str, Mapping[int, Sequence]],
    panels: Mapping[str, Sequence[str]],
    label_counts: Sequence[int],
    *,
    lines: Mapping[str, float] | None = None,
):
    """Test accuracy against labelled lines per class, one panel per entry of ``panels``
    (``{title: [method, ...]}``), and the figure.

    ``correct[method][k]`` holds one array per draw of the labelled lines, 1 where a test
    example was right: each point is the mean over the draws, its bar their standard deviation.
    A method that already appeared in an earlier panel is drawn dashed, as the reference the
    panel compares against; ``lines`` adds horizontal lines ``{label: accuracy}``, and chance
    (0.5) is always drawn.
    """
    import matplotlib.pyplot as plt

    missing = [m for names in panels.values() for m in names if m not in correct]
    if not panels or missing:
        raise ValueError(
            f"plot_label_efficiency: need at least one panel and results for every method; "
            f"no results for {missing}"
        )
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels) + 0.5, 3.9), sharey=True)
    axes = np.atleast_1d(axes)
    drawn = set()
    for ax, (title, names) in zip(axes, panels.items()):
        for i, name in enumerate(names):
            ks = sorted(correct[name])
            mean = [np.mean(correct[name][k]) for k in ks]
            std = [np.std([np.mean(hit) for hit in correct[name][k]]) for k in ks]
            style = "os^dv"[i % 5] + ("--" if name in drawn else "-")
            ax.errorbar(ks, mean, yerr=std, fmt=style, capsize=3, label=name)
        drawn.update(names)
        for j, (label, y) in enumerate((lines or {}).items()):
            ax.axhline(y, ls="--", color=f"C{(j + 3) % 10}", lw=1, label=label)
        ax.axhline(0.5, ls=":", color="gray", lw=1, label="chance")
        ax.set(xscale="log", xlabel="labelled lines per class", title=title)
        ax.set_xticks(list(label_counts), [str(k) for k in label_counts])
        ax.legend(fontsize=7, frameon=False)
    axes[0].set_ylabel("test accuracy")
    fig.tight_layout()
    return fig
