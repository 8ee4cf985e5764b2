"""The book's language models on Shakespeare: data, training recipes, evaluation.

The LLM chapter trains a causal :class:`~fmbook.transformer.GPT` and a masked
:class:`~fmbook.transformer.BERT` on the same character-level data; both are
registered in :mod:`fmbook.zoo` as ``gpt-shakespeare`` and ``bert-shakespeare``
so that later chapters load them (or train them on demand). Each has a flat config
(:func:`gpt_config`, :func:`bert_config`), a builder (:func:`build_gpt`, :func:`build_bert`)
and a training function (:func:`train_gpt`, :func:`train_bert`), joined in
:data:`GPT_RECIPE` and :data:`BERT_RECIPE`.

The two recipes are a controlled pair: the same trunk (depth, width, block), the
same batch and number of steps, so the same training compute, and each model's
learning rate chosen on the *tuning* plays by ``benchmarks/tune_lm.py`` (its
results are in ``fmbook/data/lm_lr_sweep.json``). The head-to-head of the LLM
chapter scores both on the *test* plays, which no choice ever saw.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from fmbook import zoo
from fmbook.budget import pick
from fmbook.data import VALIDATION_PLAYS, corpus, plays, random_windows
from fmbook.objectives import mask_tokens
from fmbook.tokenizers import CharTokenizer
from fmbook.train import History, LossPlot, adamw, fit
from fmbook.transformer import BERT, GPT, GPTConfig

TUNING_PLAYS = VALIDATION_PLAYS[:2]
"""Held-out plays on which hyperparameters are chosen."""
TEST_PLAYS = VALIDATION_PLAYS[2:]
"""Held-out plays on which the models are compared; no choice ever looks at them."""
LR_SWEEP_FILE = Path(__file__).parent / "data" / "lm_lr_sweep.json"
SEEDS_FILE = Path(__file__).parent / "data" / "lm_seeds.json"
"""The head-to-head of ``benchmarks/bert_vs_gpt_seeds.py`` for other seeds (full budget)."""


@dataclass(frozen=True)
class CharData:
    """Character-level Shakespeare: the tokenizer and the ids (uint8) of each split.

    ``val_ids`` holds every held-out play; it is the union of ``tune_ids``
    (:data:`TUNING_PLAYS`) and ``test_ids`` (:data:`TEST_PLAYS`).
    """

    tokenizer: CharTokenizer
    train_ids: torch.Tensor
    val_ids: torch.Tensor
    tune_ids: torch.Tensor
    test_ids: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def mask_id(self) -> int:
        """The id of BERT's [MASK] token: one past the characters."""
        return self.tokenizer.vocab_size


@functools.lru_cache(maxsize=1)
def char_data() -> CharData:
    """Tokenizer over every character of the corpus; ids of the train and validation plays."""
    tokenizer = CharTokenizer.train(corpus("all"))

    def ids(text):
        return torch.tensor(tokenizer.encode(text), dtype=torch.uint8)

    def held_out(slugs):
        return ids("\n".join(p.text for p in plays() if p.slug in slugs))

    return CharData(
        tokenizer,
        ids(corpus("train")),
        ids(corpus("validation")),
        held_out(TUNING_PLAYS),
        held_out(TEST_PLAYS),
    )


def eval_windows(ids: torch.Tensor, block_size: int, n: int, seed: int = 1234):
    """``n`` fixed random windows of ``ids`` (inputs and next-token targets): the same every run."""
    return random_windows(ids, block_size, n, torch.Generator().manual_seed(seed))


def chosen_lr(kind: str) -> float:
    """The learning rate with the lowest tuning-plays loss in ``benchmarks/tune_lm.py``'s sweep.

    Both models were swept over the same grid at the full budget, each scored by its own
    objective (next-token loss for the GPT, masked-token loss for BERT) on the tuning plays.
    """
    sweep = json.loads(LR_SWEEP_FILE.read_text(encoding="utf-8"))
    losses = sweep[kind]
    return float(min(losses, key=losses.get))


def gpt_config(budget: str | None = None) -> dict:
    """The ``gpt-shakespeare`` recipe at ``budget`` (default: the current one), as one flat dict.

    The model's sizes (the fields of :class:`~fmbook.transformer.GPTConfig`) and the training
    settings side by side; the learning rate is the sweep's best (:func:`chosen_lr`).
    """
    return {
        "vocab_size": char_data().vocab_size,
        "block_size": 64,
        "n_layer": pick(test=2, full=3, budget=budget),
        "n_head": 4,
        "n_embd": pick(test=64, full=128, budget=budget),
        "dropout": 0.0,
        "bias": True,
        "steps": pick(test=300, full=1100, budget=budget),
        "batch_size": 32,
        "lr": chosen_lr("gpt"),
        "weight_decay": 0.1,
        "seed": 0,
    }


def bert_config(budget: str | None = None) -> dict:
    """The ``bert-shakespeare`` recipe: :func:`gpt_config` with two changes, and only two.

    One more token in the vocabulary (``[MASK]``, :attr:`CharData.mask_id`) and BERT's own
    learning rate from the same sweep. Depth, width, block, batch and steps are the GPT's.
    """
    return gpt_config(budget) | {"vocab_size": char_data().mask_id + 1, "lr": chosen_lr("bert")}


def build_gpt(config: dict) -> GPT:
    """A fresh (untrained) causal :class:`~fmbook.transformer.GPT` of the recipe's sizes."""
    return GPT(_model_config(config))


def build_bert(config: dict) -> BERT:
    """A fresh (untrained) masked :class:`~fmbook.transformer.BERT` of the recipe's sizes."""
    return BERT(_model_config(config))


def _model_config(config: dict) -> GPTConfig:
    return GPTConfig(**{f.name: config[f.name] for f in fields(GPTConfig)})


def training_flops(config: dict) -> float:
    r"""Training compute of a recipe, counted as :math:`C = 6ND`.

    :math:`N` is the number of parameters outside the embeddings and the output head
    (:meth:`~fmbook.transformer.Transformer.num_params` with ``embeddings=False``) and
    :math:`D` = steps × batch × block the tokens that pass through the model: 2 FLOPs per
    parameter per token forward, 4 backward (Kaplan et al. 2020, section 2.1). A masked
    model reads every token of its window, although its loss counts only the hidden ones.
    """
    n = build_gpt(config).num_params(embeddings=False)
    tokens = config["steps"] * config["batch_size"] * config["block_size"]
    return 6.0 * n * tokens


def batch_loss(model, batch) -> torch.Tensor:
    """The model's own loss on ``batch = (inputs, targets)``: next-token (GPT) or masked (BERT)."""
    return model(*batch)[1]


def bert_batch(ids, block_size, batch_size, generator, device, mask_id, vocab_size):
    """Windows of ``ids`` corrupted by :func:`~fmbook.objectives.mask_tokens`: inputs, labels."""
    x, _ = random_windows(ids, block_size, batch_size, generator)
    inputs, labels = mask_tokens(x, mask_id, vocab_size, generator=generator)
    return inputs.to(device), labels.to(device)


@torch.no_grad()
def gpt_val_loss(model, n: int = 256, ids: torch.Tensor | None = None) -> float:
    """Mean next-token loss on ``n`` fixed windows of ``ids`` (default: every held-out play)."""
    data, device = char_data(), next(model.parameters()).device
    x, y = eval_windows(data.val_ids if ids is None else ids, model.config.block_size, n)
    return _mean_loss(model, x.to(device), y.to(device))


@torch.no_grad()
def gpt_window_losses(model, n: int = 256, ids: torch.Tensor | None = None) -> torch.Tensor:
    """The next-token loss of each of the ``n`` fixed windows of :func:`gpt_val_loss` (float64,
    on the CPU): per-window scores for a paired comparison of two models on the same text."""
    data, device = char_data(), next(model.parameters()).device
    x, y = eval_windows(data.val_ids if ids is None else ids, model.config.block_size, n)
    losses = []
    for inputs, targets in zip(x.split(64), y.split(64)):
        logits = model(inputs.to(device))[0]
        loss = F.cross_entropy(logits.transpose(1, 2), targets.to(device).long(), reduction="none")
        losses.append(loss.mean(1).double().cpu())
    return torch.cat(losses)


@torch.no_grad()
def bert_val_loss(model, n: int = 256, ids: torch.Tensor | None = None) -> float:
    """Mean masked-token loss on ``n`` fixed windows of ``ids``, masked with a fixed seed."""
    data, device = char_data(), next(model.parameters()).device
    g = torch.Generator().manual_seed(4321)
    ids = data.val_ids if ids is None else ids
    inputs, labels = bert_batch(
        ids, model.config.block_size, n, g, "cpu", data.mask_id, data.vocab_size
    )
    return _mean_loss(model, inputs.to(device), labels.to(device))


def _mean_loss(model, inputs, targets, batch: int = 64) -> float:
    losses = [batch_loss(model, b).item() for b in zip(inputs.split(batch), targets.split(batch))]
    return sum(losses) / len(losses)


def tuning_loss(kind: str, model, n: int = 512) -> float:
    """The score that chooses ``kind``'s learning rate: its own loss on the tuning plays."""
    if kind not in ("gpt", "bert"):
        raise ValueError(f"tuning_loss: kind must be 'gpt' or 'bert', got {kind!r}")
    loss = gpt_val_loss if kind == "gpt" else bert_val_loss
    return loss(model, n, ids=char_data().tune_ids)


def train_gpt(model: GPT, config: dict) -> dict:
    """Train on random windows of the training plays, next-token loss (see :func:`_train`)."""
    data, device = char_data(), next(model.parameters()).device
    g = torch.Generator().manual_seed(config["seed"])

    def batches():
        return random_windows(data.train_ids, config["block_size"], config["batch_size"], g, device)

    return _train("gpt", model, config, batches)


def train_bert(model: BERT, config: dict) -> dict:
    """Train on masked windows of the training plays, masked-token loss (see :func:`_train`)."""
    data, device = char_data(), next(model.parameters()).device
    g = torch.Generator().manual_seed(config["seed"])
    T, B = config["block_size"], config["batch_size"]

    def batches():
        return bert_batch(data.train_ids, T, B, g, device, data.mask_id, data.vocab_size)

    return _train("bert", model, config, batches)


def _train(kind: str, model, config: dict, batches) -> dict:
    """AdamW, warm-up and cosine decay, clipping at 1; monitored on the tuning plays only."""
    optimizer = adamw(
        model.parameters(),
        next(model.parameters()).device,
        lr=config["lr"],
        betas=(0.9, 0.99),
        weight_decay=config["weight_decay"],
    )
    steps = config["steps"]
    history = fit(
        model,
        batch_loss,
        batches,
        optimizer,
        steps,
        eval_fn=functools.partial(tuning_loss, kind, n=256),
        eval_every=max(1, steps // 10),
        warmup=steps // 20,
        schedule="cosine",
        grad_clip=1.0,
        title=f"{kind}-shakespeare",
    )
    return history.curves()


GPT_RECIPE = zoo.Recipe(
    "gpt-shakespeare",
    gpt_config,
    build_gpt,
    train_gpt,
    "causal character-level GPT trained on the training plays",
)
BERT_RECIPE = zoo.Recipe(
    "bert-shakespeare",
    bert_config,
    build_bert,
    train_bert,
    "masked character-level BERT trained on the training plays",
)


def trained(name: str, device=None, loss_plot: bool = False):
    """``(model, meta)``: ``gpt-shakespeare`` or ``bert-shakespeare`` from :func:`fmbook.zoo.load`.

    With ``loss_plot=True`` a model that came from the cache shows the loss curves of its
    training run (a model trained now has just shown them): one figure per training run.
    """
    if name not in (GPT_RECIPE.name, BERT_RECIPE.name):
        raise ValueError(
            f"trained: name must be {GPT_RECIPE.name!r} or {BERT_RECIPE.name!r}, got {name!r}"
        )
    model, meta = zoo.load(name, device=device, with_meta=True)
    if loss_plot and meta["cached"]:
        curves = {k: meta[k] for k in ("step", "train_loss", "eval_step", "eval_loss", "seconds")}
        LossPlot(title=f"{name} (from the cache)", live=False).finish(History(**curves))
    return model, meta


def hidden_characters(ids: torch.Tensor, n: int, block_size: int = 64, seed: int = 2024):
    """``n`` fixed windows of ``ids`` and one position in the second half of each to hide.

    Returns ``(windows, position, truth)``; ``truth[i] = windows[i, position[i]]``.
    """
    x, _ = eval_windows(ids, block_size, n, seed=seed)
    position = torch.randint(
        block_size // 2, block_size, (n,), generator=torch.Generator().manual_seed(5)
    )
    return x, position, x[torch.arange(n), position]


@torch.no_grad()
def head_to_head(bert, gpt, ids: torch.Tensor, n: int, batch: int = 512):
    """Which hidden characters each model names right: ``(bert_right, gpt_right)``, floats 0/1.

    BERT sees the whole window with the hidden character replaced by ``[MASK]``; the GPT
    sees the characters to its left (its logits at ``t - 1`` predict position ``t``).
    """
    x, position, truth = hidden_characters(ids, n, bert.config.block_size)
    mask_id, device = char_data().mask_id, next(bert.parameters()).device
    bert_guess, gpt_guess = [], []
    for i in range(0, n, batch):
        w, p = x[i : i + batch], position[i : i + batch]
        rows = torch.arange(len(w))
        corrupted = w.clone()
        corrupted[rows, p] = mask_id
        bert_guess.append(bert(corrupted.to(device))[0][rows, p].argmax(-1).cpu())
        gpt_guess.append(gpt(w.to(device))[0][rows, p - 1].argmax(-1).cpu())
    return (torch.cat(bert_guess) == truth).float(), (torch.cat(gpt_guess) == truth).float()
