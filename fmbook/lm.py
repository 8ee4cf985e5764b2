"""The book's language models on Shakespeare: data, training recipes, evaluation.

The LLM chapter trains a causal :class:`~fmbook.transformer.GPT` and a masked
:class:`~fmbook.transformer.BERT` on the same character-level data; both are
registered in :mod:`fmbook.zoo` as ``gpt-shakespeare`` and ``bert-shakespeare``
so that later chapters load them (or train them on demand).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from fmbook import budget
from fmbook.data import corpus, random_windows
from fmbook.objectives import mask_tokens
from fmbook.tokenizers import CharTokenizer
from fmbook.transformer import BERT, GPT, GPTConfig
from fmbook.zoo import Recipe


@dataclass(frozen=True)
class CharData:
    """Character-level Shakespeare: the tokenizer and the train / validation ids (uint8)."""

    tokenizer: CharTokenizer
    train_ids: torch.Tensor
    val_ids: torch.Tensor

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

    def ids(split):
        return torch.tensor(tokenizer.encode(corpus(split)), dtype=torch.uint8)

    return CharData(tokenizer, ids("train"), ids("validation"))


def eval_windows(ids: torch.Tensor, block_size: int, n: int, seed: int = 1234):
    """``n`` fixed random windows of ``ids`` (inputs and next-token targets): the same every run."""
    return random_windows(ids, block_size, n, torch.Generator().manual_seed(seed))


def recipe_config(kind: str) -> dict:
    """Model and training sizes of ``gpt-shakespeare`` / ``bert-shakespeare`` at the current budget."""
    if kind not in ("gpt", "bert"):
        raise ValueError(f"recipe_config: kind must be 'gpt' or 'bert', got {kind!r}")
    data = char_data()
    small = budget.is_test()
    gpt_layers = 2 if small else 3
    gpt_steps = budget.pick(test=300, full=1100, gpu=5000)
    # BERT learns only from the 15% of positions it hides: it needs many more steps than
    # the GPT to get past predicting letter frequencies. It gets two layers and a bit
    # more than twice the steps (about 1.5x the GPT's training compute, layers x steps).
    layers = gpt_layers if kind == "gpt" else 2
    steps = gpt_steps if kind == "gpt" else (600 if small else gpt_steps * 24 // 11)
    model = {
        "vocab_size": data.vocab_size + (kind == "bert"),
        "block_size": 64,
        "n_layer": layers,
        "n_head": 4,
        "n_embd": 64 if small else 128,
        "dropout": 0.0,
        "bias": True,
    }
    return {
        "model": model,
        "steps": steps,
        "batch_size": budget.pick(test=32, full=32, gpu=64),
        "lr": 4e-3 if kind == "gpt" else 3e-3,  # BERT at 4e-3: 49% in the head-to-head, at 3e-3: 56%
        "weight_decay": 0.1,
        "seed": 0,
    }


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
def gpt_val_loss(model, n: int = 256) -> float:
    """Mean next-token loss on ``n`` fixed validation windows."""
    data, device = char_data(), next(model.parameters()).device
    x, y = eval_windows(data.val_ids, model.config.block_size, n)
    losses = [model(a.to(device), b.to(device))[1].item() for a, b in zip(x.split(64), y.split(64))]
    return sum(losses) / len(losses)


@torch.no_grad()
def bert_val_loss(model, n: int = 256) -> float:
    """Mean masked-token loss on ``n`` fixed validation windows, masked with a fixed seed."""
    data, device = char_data(), next(model.parameters()).device
    g = torch.Generator().manual_seed(4321)
    inputs, labels = bert_batch(
        data.val_ids, model.config.block_size, n, g, "cpu", data.mask_id, data.vocab_size
    )
    losses = [model(a.to(device), b.to(device))[1].item() for a, b in zip(inputs.split(64), labels.split(64))]
    return sum(losses) / len(losses)


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
            loss_fn, eval_fn = gpt_loss, gpt_val_loss
        else:
            batches = lambda: bert_batch(data.train_ids, T, B, g, device, data.mask_id, data.vocab_size)  # noqa: E731
            loss_fn, eval_fn = bert_loss, bert_val_loss
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
