"""The book's language models on Shakespeare: data, training recipes, evaluation.

The LLM chapter trains a causal :class:`~fmbook.transformer.GPT` and a masked
:class:`~fmbook.transformer.BERT` on the same character-level data; both are
registered in :mod:`fmbook.zoo` as ``gpt-shakespeare`` and ``bert-shakespeare``
so that later chapters load them (or train them on demand).

The two recipes are a controlled pair: the same trunk (depth, width, block), the
same batch and number of steps, so the same training compute, and each model's
learning rate chosen on the *tuning* plays by ``benchmarks/tune_lm.py`` (its
results are in ``fmbook/data/lm_lr_sweep.json``). The head-to-head of the LLM
chapter scores both on the *test* plays, which no choice ever saw.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from fmbook import budget
from fmbook.data import VALIDATION_PLAYS, corpus, plays, random_windows
from fmbook.objectives import mask_tokens
from fmbook.tokenizers import CharTokenizer
from fmbook.transformer import BERT, GPT, GPTConfig
from fmbook.zoo import Recipe

TUNING_PLAYS = VALIDATION_PLAYS[:2]
"""Held-out plays on which hyperparameters are chosen."""
TEST_PLAYS = VALIDATION_PLAYS[2:]
"""Held-out plays on which the models are compared; no choice ever looks at them."""
LR_SWEEP_FILE = Path(__file__).parent / "data" / "lm_lr_sweep.json"
SEEDS_FILE = Path(__file__).parent / "data" / "lm_seeds.json"
"""The head-to-head of ``benchmarks/bert_vs_gpt_seeds.py`` for other training seeds (full budget)."""


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


def recipe_config(kind: str, lr: float | None = None) -> dict:
    """Model and training sizes of ``gpt-shakespeare`` / ``bert-shakespeare`` at the current budget.

    Both share depth, width, block, batch and steps; they differ in the attention mask,
    BERT's extra ``[MASK]`` token and the learning rate (:func:`chosen_lr`, or ``lr``).
    """
    if kind not in ("gpt", "bert"):
        raise ValueError(f"recipe_config: kind must be 'gpt' or 'bert', got {kind!r}")
    data = char_data()
    small = budget.is_test()
    model = {
        "vocab_size": data.vocab_size + (kind == "bert"),
        "block_size": 64,
        "n_layer": 2 if small else 3,
        "n_head": 4,
        "n_embd": 64 if small else 128,
        "dropout": 0.0,
        "bias": True,
    }
    return {
        "model": model,
        "steps": budget.pick(test=300, full=1100, gpu=5000),
        "batch_size": budget.pick(test=32, full=32, gpu=64),
        "lr": chosen_lr(kind) if lr is None else float(lr),
        "weight_decay": 0.1,
        "seed": 0,
    }


def training_flops(config: dict) -> float:
    r"""Training compute of a recipe, counted as :math:`C = 6ND`.

    :math:`N` is the number of parameters outside the embeddings and the output head
    (:meth:`~fmbook.transformer.GPT.num_params` with ``embeddings=False``) and
    :math:`D` = steps × batch × block the tokens that pass through the model: 2 FLOPs per
    parameter per token forward, 4 backward (Kaplan et al. 2020, section 2.1). A masked
    model reads every token of its window, although its loss counts only the hidden ones.
    """
    model = _build("gpt")(config)
    n = model.num_params(embeddings=False)
    tokens = config["steps"] * config["batch_size"] * config["model"]["block_size"]
    return 6.0 * n * tokens


def _build(kind):
    return lambda config: (GPT if kind == "gpt" else BERT)(GPTConfig(**config["model"]))


def gpt_loss(model, batch):
    x, y = batch
    return model(x, y)[1]


def bert_batch(ids, block_size, batch_size, generator, device, mask_id, vocab_size):
    """Windows of ``ids`` corrupted by :func:`~fmbook.objectives.mask_tokens`: ``(inputs, labels)``."""
    x, _ = random_windows(ids, block_size, batch_size, generator)
    inputs, labels = mask_tokens(x, mask_id, vocab_size, generator=generator)
    return inputs.to(device), labels.to(device)


def bert_loss(model, batch):
    inputs, labels = batch
    return model(inputs, labels)[1]


@torch.no_grad()
def gpt_val_loss(model, n: int = 256, ids: torch.Tensor | None = None) -> float:
    """Mean next-token loss on ``n`` fixed windows of ``ids`` (default: every held-out play)."""
    data, device = char_data(), next(model.parameters()).device
    x, y = eval_windows(data.val_ids if ids is None else ids, model.config.block_size, n)
    losses = [model(a.to(device), b.to(device))[1].item() for a, b in zip(x.split(64), y.split(64))]
    return sum(losses) / len(losses)


@torch.no_grad()
def bert_val_loss(model, n: int = 256, ids: torch.Tensor | None = None) -> float:
    """Mean masked-token loss on ``n`` fixed windows of ``ids``, masked with a fixed seed."""
    data, device = char_data(), next(model.parameters()).device
    g = torch.Generator().manual_seed(4321)
    inputs, labels = bert_batch(
        data.val_ids if ids is None else ids, model.config.block_size, n, g, "cpu", data.mask_id, data.vocab_size
    )
    losses = [model(a.to(device), b.to(device))[1].item() for a, b in zip(inputs.split(64), labels.split(64))]
    return sum(losses) / len(losses)


def tuning_loss(kind: str, model, n: int = 512) -> float:
    """The score that chooses ``kind``'s learning rate: its own loss on the tuning plays."""
    loss = gpt_val_loss if kind == "gpt" else bert_val_loss
    return loss(model, n, ids=char_data().tune_ids)


def train(kind: str):
    """The zoo's train function for ``kind``: AdamW, warm-up and cosine decay, clipping at 1."""
    from fmbook.train import fit

    def run(model, config):
        data = char_data()
        device = next(model.parameters()).device
        g = torch.Generator().manual_seed(config["seed"])
        T, B = config["model"]["block_size"], config["batch_size"]
        if kind == "gpt":
            batches = lambda: random_windows(data.train_ids, T, B, g, device)  # noqa: E731
            loss_fn = gpt_loss
        else:
            batches = lambda: bert_batch(data.train_ids, T, B, g, device, data.mask_id, data.vocab_size)  # noqa: E731
            loss_fn = bert_loss
        eval_fn = functools.partial(tuning_loss, kind, n=256)  # monitored on the tuning plays only
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config["lr"], betas=(0.9, 0.99), weight_decay=config["weight_decay"]
        )
        steps = config["steps"]
        history = fit(
            model,
            loss_fn,
            batches,
            optimizer,
            steps,
            eval_fn=eval_fn,
            eval_every=max(1, steps // 10),
            warmup=steps // 20,
            schedule="cosine",
            grad_clip=1.0,
            title=f"{kind}-shakespeare",
        )
        return {
            "step": history.step,
            "train_loss": history.train_loss,
            "eval_step": history.eval_step,
            "eval_loss": history.eval_loss,
            "seconds": history.seconds,
        }

    return run


def _recipe(kind: str, description: str) -> Recipe:
    return Recipe(f"{kind}-shakespeare", lambda: recipe_config(kind), _build(kind), train(kind), description)


GPT_SHAKESPEARE = _recipe("gpt", "causal character-level GPT trained on the training plays")
BERT_SHAKESPEARE = _recipe("bert", "masked character-level BERT trained on the training plays")


def hidden_characters(ids: torch.Tensor, n: int, block_size: int = 64, seed: int = 2024):
    """``n`` fixed windows of ``ids`` and one position in the second half of each to hide.

    Returns ``(windows, position, truth)``; ``truth[i] = windows[i, position[i]]``.
    """
    x, _ = eval_windows(ids, block_size, n, seed=seed)
    position = torch.randint(block_size // 2, block_size, (n,), generator=torch.Generator().manual_seed(5))
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
