r"""From a language model to an assistant: the losses of instruction tuning and of learning from
preferences.

Every sequence here is a *prompt* followed by a *response*; only the response is the model's to
write. With :math:`x` the prompt, :math:`y` the response and :math:`\pi(y \mid x) = \prod_t
\pi(y_t \mid x, y_{<t})`:

* supervised instruction tuning (SFT, Ouyang et al. 2022, section 3.5): the next-token loss on
  the response tokens only, :math:`\mathcal{L} = -\frac{1}{|y|}\sum_t \log \pi(y_t \mid x,
  y_{<t})` (:func:`sft_example`, :func:`sft_loss`);
* a reward model trained on pairs where :math:`y_w` was preferred to :math:`y_l`, with the
  Bradley-Terry loss :math:`-\log \sigma(r(x, y_w) - r(x, y_l))` (Christiano et al. 2017;
  Ouyang et al. 2022, eq. 1) (:class:`RewardModel`, :func:`bradley_terry_loss`);
* direct preference optimisation (DPO, Rafailov et al. 2023, eq. 7),
  :math:`-\log\sigma\big(\beta \log\frac{\pi(y_w\mid x)}{\pi_\text{ref}(y_w\mid x)} - \beta
  \log\frac{\pi(y_l\mid x)}{\pi_\text{ref}(y_l\mid x)}\big)` (:func:`dpo_loss`);
* the KL divergence that keeps a tuned policy near its reference,
  :math:`\mathrm{KL}(\pi \,\|\, \pi_\text{ref}) = \mathbb{E}_{y\sim\pi}\big[\log \pi(y \mid x)
  - \log \pi_\text{ref}(y \mid x)\big]`, estimated from samples (:func:`kl_per_token`).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fmbook import budget, lm, train, zoo
from fmbook.data import instructions
from fmbook.objectives import IGNORE_INDEX, next_token_loss
from fmbook.runtime import seeded

SFT_RECIPE = {
    "n_train": 4000,
    "n_val": 100,
    "batch_size": 32,
    "seed": 0,
    "lora_targets": ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj"),
    "lora_rank": 8,
    "max_new_tokens": 41,
}
"""Instruction tuning in the alignment chapter: training examples and validation examples per task
(:func:`fmbook.data.instructions.splits`), batch, seed, LoRA's layers and rank, and the longest
reply (a line of the ``word`` task and its newline)."""
SFT_SWEEP_FILE = Path(__file__).parent / "data" / "sft_sweep.json"
"""The learning rates and step counts of ``benchmarks/tune_sft.py``, scored on the tuning plays."""


def sft_example(
    prompt: list[int], response: list[int], block_size: int, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets ``(block_size,)`` of one prompt-response pair for :func:`sft_loss`.

    The inputs are ``prompt + response`` without its last token, padded with ``pad_id``; the
    target at each position is the next token where that token belongs to the response, and
    ``IGNORE_INDEX`` elsewhere (the prompt and the padding), so the loss never asks the model to
    write the prompt.
    """
    if not prompt or not response:
        raise ValueError(
            f"sft_example: prompt and response must be non-empty, got {len(prompt)} and "
            f"{len(response)} tokens"
        )
    ids = list(prompt) + list(response)
    if len(ids) - 1 > block_size:
        raise ValueError(
            f"sft_example: prompt + response is {len(ids)} tokens; at most block_size + 1 = "
            f"{block_size + 1} fit"
        )
    x = torch.full((block_size,), pad_id, dtype=torch.long)
    y = torch.full((block_size,), IGNORE_INDEX, dtype=torch.long)
    x[: len(ids) - 1] = torch.tensor(ids[:-1])
    y[len(prompt) - 1 : len(ids) - 1] = torch.tensor(list(response))
    return x, y


def sft_tensors(
    pairs: Sequence[tuple[str, str]],
    encode: Callable[[str], list[int]],
    block_size: int,
    pad_id: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sft_example` for many ``(prompt, response)`` pairs of text, stacked: inputs and
    targets ``(N, block_size)``."""
    if not pairs:
        raise ValueError("sft_tensors: no (prompt, response) pairs given")
    rows = [sft_example(encode(p), encode(r), block_size, pad_id) for p, r in pairs]
    return torch.stack([x for x, _ in rows]), torch.stack([y for _, y in rows])


def sft_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""Mean next-token cross-entropy over the response tokens: the positions of ``targets``
    ``(B, T)`` that are not ``IGNORE_INDEX`` (:func:`sft_example`),
    :math:`-\frac{1}{N}\sum_{(b,t) \in \text{response}} \log \pi(y_{b,t} \mid \cdot)`."""
    if not (targets != IGNORE_INDEX).any():
        raise ValueError("sft_loss: every target is IGNORE_INDEX; there is no response to learn")
    return next_token_loss(logits, targets)


def response_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""Per-token :math:`\log \pi(y_t \mid \cdot)` ``(B, T)`` of the targets, 0 where a target is
    ``IGNORE_INDEX``; summed over ``t`` it is :math:`\log \pi(y \mid x)`."""
    if logits.ndim != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"response_log_probs: expected logits (B, T, V) and targets (B, T), "
            f"got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    scored = targets != IGNORE_INDEX
    picked = torch.log_softmax(logits.float(), -1).gather(2, targets.clamp(min=0)[..., None])[
        ..., 0
    ]
    return picked.masked_fill(~scored, 0.0)


def sequence_log_prob(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    r""":math:`\log \pi(y \mid x)` ``(B,)`` of each response under a causal language ``model``,
    from the inputs and targets of :func:`sft_example`."""
    logits, _ = model(inputs)
    return response_log_probs(logits, targets).sum(1)


class RewardModel(nn.Module):
    r"""A scalar reward :math:`r(x, y)`: a causal trunk's final hidden state at the last real token
    of ``prompt + response``, read by a linear head (Ouyang et al. 2022, section 3.5: the SFT model
    with its unembedding layer replaced by a scalar output).

    ``trunk`` is a :class:`~fmbook.transformer.GPT` (its ``lm_head`` is not used).
    """

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(trunk.config.n_embd, 1)

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Rewards ``(B,)`` of the sequences ``idx`` ``(B, T)`` of real lengths ``lengths``; the
        columns after the longest sequence are never read."""
        if lengths.shape != (idx.shape[0],) or bool(
            ((lengths < 1) | (lengths > idx.shape[1])).any()
        ):
            raise ValueError(
                f"RewardModel: lengths must be ({idx.shape[0]},) values in [1, {idx.shape[1]}], "
                f"got shape {tuple(lengths.shape)}"
            )
        # causal: the last real token never sees the padding, so the columns after the longest
        # sequence are cut before the trunk runs
        states = self.trunk.hidden(idx[:, : int(lengths.max())])
        last = states[torch.arange(idx.shape[0], device=idx.device), lengths.to(idx.device) - 1]
        return self.head(last)[:, 0]


def bradley_terry_loss(reward_chosen: torch.Tensor, reward_rejected: torch.Tensor) -> torch.Tensor:
    r"""Mean of :math:`-\log \sigma(r_w - r_l)`: the negative log-likelihood of the preferences
    under the Bradley-Terry model :math:`P(y_w \succ y_l) = \sigma(r_w - r_l)`."""
    if reward_chosen.shape != reward_rejected.shape or reward_chosen.ndim != 1:
        raise ValueError(
            "bradley_terry_loss: expected two rewards of the same shape (B,), got "
            f"{tuple(reward_chosen.shape)} and {tuple(reward_rejected.shape)}"
        )
    return -F.logsigmoid(reward_chosen - reward_rejected).mean()


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    r"""The DPO loss (Rafailov et al. 2023, eq. 7) from sequence log-probabilities ``(B,)``:

    .. math::
        -\log \sigma\Big(\beta \big[\log \pi(y_w) - \log \pi_\text{ref}(y_w)\big]
        - \beta \big[\log \pi(y_l) - \log \pi_\text{ref}(y_l)\big]\Big),

    averaged over the batch. :math:`\beta > 0` sets how far from the reference the policy may
    go: the implicit reward is :math:`\beta \log \pi / \pi_\text{ref}`.
    """
    if not beta > 0:
        raise ValueError(f"dpo_loss: beta must be > 0, got {beta}")
    shapes = {
        tuple(t.shape)
        for t in (policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    }
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(
            f"dpo_loss: expected four log-probabilities of one shape (B,), got {shapes}"
        )
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    return -F.logsigmoid(beta * margin).mean()


def kl_per_token(
    policy_logits: torch.Tensor, reference_logits: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    r"""Per-sequence :math:`\sum_t \mathrm{KL}\big(\pi(\cdot \mid y_{<t}) \,\|\,
    \pi_\text{ref}(\cdot \mid y_{<t})\big)` ``(B,)`` over the response positions of ``targets``.

    For responses sampled from :math:`\pi`, its mean is an unbiased estimate of the sequence-level
    :math:`\mathrm{KL}(\pi \,\|\, \pi_\text{ref})` (the chain rule of the KL divergence), with less
    variance than the mean of :math:`\log \pi(y) - \log \pi_\text{ref}(y)`, because each position's
    divergence is computed exactly over the vocabulary.
    """
    if policy_logits.shape != reference_logits.shape or targets.shape != policy_logits.shape[:2]:
        raise ValueError(
            "kl_per_token: expected policy and reference logits of one shape (B, T, V) and "
            f"targets (B, T), got {tuple(policy_logits.shape)}, {tuple(reference_logits.shape)} "
            f"and {tuple(targets.shape)}"
        )
    log_p = torch.log_softmax(policy_logits.float(), -1)
    log_q = torch.log_softmax(reference_logits.float(), -1)
    per_position = (log_p.exp() * (log_p - log_q)).sum(-1)
    return per_position.masked_fill(targets == IGNORE_INDEX, 0.0).sum(1)


def used_length(used: torch.Tensor) -> int:
    """The number of leading positions of a batch ``(N, T)`` that hold anything: one past the last
    column where ``used`` is true (1 when nothing is). Under causal attention no position depends
    on a later one, so cutting a batch there changes no output at the positions kept."""
    columns = used.any(0).nonzero()
    return int(columns[-1]) + 1 if len(columns) else 1


def train_sft(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int = 32,
    seed: int = 0,
    eval_fn: Callable[[nn.Module], float] | None = None,
    eval_every: int | None = None,
    title: str = "instruction tuning",
) -> train.History:
    """Instruction-tune ``model``: :func:`sft_loss` on batches of ``batch_size`` rows of
    :func:`sft_tensors`, drawn with replacement by a generator seeded with ``seed``.

    AdamW at a constant ``lr`` without weight decay on the parameters that require a gradient
    (all of them, or LoRA's), the gradient norm clipped at 1; ``eval_fn`` as in
    :func:`fmbook.train.fit`. Each batch is cut after its last target (:func:`used_length`): under
    causal attention the padding after it changes neither the loss nor its gradient. A constant
    rate makes the first ``k`` steps of a longer run the same as a run of ``k`` steps, so one run
    scores every step count it passes.
    """
    if inputs.shape != targets.shape or inputs.ndim != 2:
        raise ValueError(
            f"train_sft: expected inputs and targets of one shape (N, T), got "
            f"{tuple(inputs.shape)} and {tuple(targets.shape)}"
        )
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)

    def batch():
        rows = torch.randint(len(inputs), (batch_size,), generator=generator)
        x, y = inputs[rows], targets[rows]
        t = used_length(y != IGNORE_INDEX)
        return x[:, :t].to(device), y[:, :t].to(device)

    def loss_fn(model, xy):
        logits, _ = model(xy[0])
        return sft_loss(logits, xy[1])

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = train.adamw(trainable, device, lr=lr, weight_decay=0.0)
    return train.fit(
        model,
        loss_fn,
        batch,
        optimizer,
        steps,
        eval_fn=eval_fn,
        eval_every=eval_every,
        grad_clip=1.0,
        title=title,
    )


@torch.no_grad()
def respond(
    model: nn.Module,
    prompts: Sequence[str],
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    greedy: bool = True,
    seed: int = 0,
    batch_size: int = 256,
) -> list[str]:
    """The reply of a causal ``model`` to each prompt: the text it writes after the prompt, up to
    (not including) its first newline, at most ``max_new_tokens`` characters.

    ``greedy`` takes the most likely token at every step; otherwise tokens are sampled at
    ``temperature`` with a generator seeded with ``seed``. Prompts of equal length are answered
    together, so no prompt is padded, and a batch stops once each of its replies has ended.
    """
    if isinstance(prompts, str) or not prompts:
        raise ValueError(f"respond: prompts must be a non-empty list of strings, got {prompts!r}")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same draws on every device
    by_length = defaultdict(list)
    encoded = [encode(p) for p in prompts]
    for i, ids in enumerate(encoded):
        by_length[len(ids)].append(i)
    replies, newline = [""] * len(prompts), encode("\n")[0]
    for length, rows in sorted(by_length.items()):
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            x = torch.tensor([encoded[i] for i in chunk], device=device)
            out = model.generate(
                x,
                max_new_tokens,
                temperature=temperature,
                top_k=1 if greedy else None,
                generator=generator,
                stop=newline,
            )
            for i, ids in zip(chunk, out[:, length:].tolist()):
                replies[i] = decode(ids).split("\n")[0]
    return replies


def chosen_sft(method: str) -> dict:
    """``{"lr", "steps", "score"}``: the learning rate and step count of ``method`` (``"full"`` or
    ``"lora"``) with the highest mean rate of followed instructions on the tuning plays in
    ``benchmarks/tune_sft.py``'s sweep (ties: the fewer steps, then the smaller rate)."""
    sweep = json.loads(SFT_SWEEP_FILE.read_text(encoding="utf-8"))
    if method not in sweep["methods"]:
        swept = sorted(sweep["methods"])
        raise ValueError(f"chosen_sft: unknown method {method!r}; swept: {swept}")
    scores = [
        (score, -int(steps), -float(lr), lr, steps)
        for lr, by_steps in sweep["methods"][method].items()
        for steps, score in by_steps.items()
    ]
    score, _, _, lr, steps = max(scores)
    return {"lr": float(lr), "steps": int(steps), "score": score}


def noisy_preferences(
    gold_a: torch.Tensor, gold_b: torch.Tensor, temperature: float, generator: torch.Generator
) -> torch.Tensor:
    r"""A noisy labeller's choices: ``True`` where :math:`a` is preferred to :math:`b`, drawn with
    probability :math:`\sigma\big((g_a - g_b) / \tau\big)` (the Bradley-Terry model with gold
    rewards :math:`g` and a temperature :math:`\tau > 0`: the smaller :math:`\tau`, the fewer the
    mistakes; equal gold rewards are a coin toss)."""
    if not temperature > 0:
        raise ValueError(f"noisy_preferences: temperature must be > 0, got {temperature}")
    if gold_a.shape != gold_b.shape or gold_a.ndim != 1:
        raise ValueError(
            "noisy_preferences: expected two gold rewards of one shape (N,), got "
            f"{tuple(gold_a.shape)} and {tuple(gold_b.shape)}"
        )
    p = torch.sigmoid((gold_a.double() - gold_b.double()) / temperature)
    return torch.rand(len(p), generator=generator, dtype=torch.float64) < p


def sequences(
    texts: Sequence[str], encode: Callable[[str], list[int]], block_size: int, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``(N, block_size)`` of ``texts``, padded with ``pad_id``, and their lengths
    ``(N,)``: the inputs of :class:`RewardModel`."""
    encoded = [encode(t) for t in texts]
    if not encoded or any(not 1 <= len(ids) <= block_size for ids in encoded):
        raise ValueError(
            f"sequences: need at least one text, each of 1 to {block_size} tokens; lengths "
            f"{sorted({len(ids) for ids in encoded})}"
        )
    ids = torch.full((len(encoded), block_size), pad_id, dtype=torch.long)
    for row, tokens in enumerate(encoded):
        ids[row, : len(tokens)] = torch.tensor(tokens)
    return ids, torch.tensor([len(t) for t in encoded])


@torch.no_grad()
def rewards(
    model: RewardModel, ids: torch.Tensor, lengths: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """:math:`r(x, y)` ``(N,)`` of every sequence, in evaluation mode, on the CPU."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [
        model(ids[i : i + batch_size].to(device), lengths[i : i + batch_size].to(device)).float()
        for i in range(0, len(ids), batch_size)
    ]
    model.train(was_training)
    return torch.cat(out).cpu()


def train_reward_model(
    model: RewardModel,
    chosen: tuple[torch.Tensor, torch.Tensor],
    rejected: tuple[torch.Tensor, torch.Tensor],
    *,
    steps: int,
    lr: float,
    batch_size: int = 32,
    seed: int = 0,
    val: tuple | None = None,
    eval_every: int = 50,
    title: str = "reward model",
) -> train.History:
    """Fit ``model`` to preference pairs with :func:`bradley_terry_loss`: row ``i`` of ``chosen``
    (ids, lengths) was preferred to row ``i`` of ``rejected``. Batches of ``batch_size`` pairs are
    drawn with replacement with ``seed`` (:class:`RewardModel` skips the padding after their
    longest sequence); AdamW at a constant ``lr``, no weight decay, gradient norm clipped at 1.

    With ``val = (chosen, rejected)`` pairs, the share of them that the model orders like the
    labels is measured every ``eval_every`` steps (the history's ``eval_loss``), and the model
    ends with the weights of the best measurement (early stopping on the validation pairs).
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    (w_ids, w_len), (l_ids, l_len) = chosen, rejected
    if not (w_ids.shape == l_ids.shape and w_len.shape == l_len.shape == (len(w_ids),)):
        raise ValueError(
            "train_reward_model: chosen and rejected must hold the same number of sequences, "
            f"got {tuple(w_ids.shape)} and {tuple(l_ids.shape)}"
        )

    def batch():
        rows = torch.randint(len(w_ids), (batch_size,), generator=generator)
        ids = torch.cat([w_ids[rows], l_ids[rows]]).to(device)
        return ids, torch.cat([w_len[rows], l_len[rows]]).to(device)

    def loss_fn(model, batch):
        r = model(*batch)
        return bradley_terry_loss(r[:batch_size], r[batch_size:])

    best = {"accuracy": -1.0, "state": None}

    def val_accuracy(model):
        accuracy = pair_accuracy(rewards(model, *val[0]), rewards(model, *val[1]))
        if accuracy > best["accuracy"]:
            best.update(accuracy=accuracy, state=copy.deepcopy(model.state_dict()))
        return accuracy

    optimizer = train.adamw(model.parameters(), device, lr=lr, weight_decay=0.0)
    history = train.fit(
        model,
        loss_fn,
        batch,
        optimizer,
        steps,
        eval_fn=val_accuracy if val is not None else None,
        eval_every=eval_every if val is not None else None,
        grad_clip=1.0,
        title=title,
    )
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    return history


def pair_accuracy(reward_chosen: torch.Tensor, reward_rejected: torch.Tensor) -> float:
    """The share of pairs in which the chosen sequence has the higher reward (a tie counts one
    half)."""
    if reward_chosen.shape != reward_rejected.shape or reward_chosen.numel() == 0:
        raise ValueError(
            "pair_accuracy: expected two non-empty reward tensors of one shape, got "
            f"{tuple(reward_chosen.shape)} and {tuple(reward_rejected.shape)}"
        )
    d = reward_chosen - reward_rejected
    return float(((d > 0).double() + 0.5 * (d == 0).double()).mean())


def instruct_config() -> dict:
    """The ``gpt-instruct`` recipe at the current budget: ``gpt-shakespeare`` (its config under
    ``"base"``) instruction-tuned by full finetuning at the rate and step count of
    :func:`chosen_sft`, on the training examples of :func:`fmbook.data.instructions.splits`."""
    choice = chosen_sft("full")
    return {
        "base": lm.gpt_config(),
        "lr": choice["lr"],
        "steps": budget.pick(test=60, full=choice["steps"]),
        "n_train": budget.pick(test=300, full=SFT_RECIPE["n_train"]),
        "batch_size": SFT_RECIPE["batch_size"],
        "seed": SFT_RECIPE["seed"],
    }


def _build_instruct(config: dict) -> nn.Module:
    return lm.build_gpt(config["base"])


def _train_instruct(model: nn.Module, config: dict) -> dict:
    device = next(model.parameters()).device
    model.load_state_dict(zoo.load("gpt-shakespeare", device=device, quiet=True).state_dict())
    tokenizer = lm.char_data().tokenizer
    examples = instructions.splits(config["n_train"], 1, 1).train
    inputs, targets = sft_tensors(
        [(e.prompt, e.response) for e in examples],
        tokenizer.encode,
        instructions.BLOCK,
        tokenizer.encode(" ")[0],
    )
    history = train_sft(
        model,
        inputs,
        targets,
        steps=config["steps"],
        lr=config["lr"],
        batch_size=config["batch_size"],
        seed=config["seed"],
        title="gpt-instruct",
    )
    return history.as_meta()


INSTRUCT_RECIPE = zoo.Recipe(
    "gpt-instruct",
    instruct_config,
    _build_instruct,
    _train_instruct,
    "gpt-shakespeare instruction-tuned on the Spell, Shout and Use examples (full finetuning)",
)


# -- preferences and the reward model of notebook 2, as a zoo recipe ---------------------------

PREFERENCE_RECIPE = {
    "words": (60, 20, 20),
    "replies": {"train": 4, "val": 2, "test": 2},
    "seeds": {"train": 1, "val": 2, "test": 3},
    "label_seeds": {"train": 11, "val": 12, "test": 13},
    "tau": 0.5,
    "lr": 3e-4,
    "batch_size": 32,
    "seed": 0,
}
"""The preference data and reward model of the alignment chapter: how the words of the ``Use``
task split into training, validation and test words, how many replies are sampled per prompt
(every two of them make a pair), the seeds of the prompts and replies and of the labels, the
labellers' temperature and the reward model's optimiser. The number of prompts and of steps depend
on the budget (:func:`reward_config`)."""


def use_words(n_words: int = 100, seed: int = 0) -> dict[str, list[str]]:
    """The words of the ``Use`` task (:func:`fmbook.data.instructions.splits`), shuffled with
    ``seed`` and split into ``"train"``, ``"val"`` and ``"test"`` words in the proportions of
    :data:`PREFERENCE_RECIPE`."""
    words = instructions.splits(1, 1, 1, n_words=n_words).words
    sizes = PREFERENCE_RECIPE["words"]
    if len(words) != sum(sizes):
        raise ValueError(f"use_words: expected {sum(sizes)} words, got {len(words)}")
    order = np.random.default_rng(seed).permutation(len(words))
    ends = np.cumsum(sizes)
    return {
        part: [words[i] for i in order[end - size : end]]
        for part, size, end in zip(("train", "val", "test"), sizes, ends)
    }


def sample_pairs(
    policy: nn.Module,
    words: Sequence[str],
    n_prompts: int,
    k: int,
    seed: int,
    tokenizer,
    known: frozenset[str],
) -> dict:
    """Prompts ``"Use: w\\n"`` for ``n_prompts`` words drawn from ``words`` with ``seed``, ``k``
    replies sampled from ``policy`` (temperature 1, :func:`respond` with ``seed``) to each, and
    every two replies to one prompt as a pair ``a``, ``b`` with their gold rewards.

    Returns lists ``"word"``, ``"prompt"``, ``"a"``, ``"b"`` and tensors ``"gold_a"``,
    ``"gold_b"``, one entry per pair.
    """
    if k < 2 or n_prompts < 1:
        raise ValueError(f"sample_pairs: need k >= 2 and n_prompts >= 1, got {k}, {n_prompts}")
    rng = np.random.default_rng(seed)
    asked = [words[i] for i in rng.integers(len(words), size=n_prompts)]
    prompts = [f"Use: {w}\n" for w in asked for _ in range(k)]
    replies = respond(
        policy,
        prompts,
        tokenizer.encode,
        tokenizer.decode,
        SFT_RECIPE["max_new_tokens"],
        greedy=False,
        seed=seed,
    )
    out = {"word": [], "prompt": [], "a": [], "b": []}
    for p, w in enumerate(asked):
        for a, b in itertools.combinations(replies[p * k : (p + 1) * k], 2):
            for key, value in zip(out, (w, f"Use: {w}\n", a, b)):
                out[key].append(value)
    for side in "ab":
        gold = [instructions.gold_reward(w, r, known) for w, r in zip(out["word"], out[side])]
        out[f"gold_{side}"] = torch.tensor(gold)
    return out


def label_pairs(pairs: dict, tau: float, seed: int, tokenizer) -> dict:
    """Noisy labels (:func:`noisy_preferences` with ``tau`` and ``seed``) for :func:`sample_pairs`:
    ``"chosen"`` and ``"rejected"`` sequences ``prompt + reply + "\\n"`` as :func:`sequences`
    (ids, lengths); ``"gold_margin"``, the chosen reply's gold reward minus the rejected one's;
    and the texts: ``"prompt"``, ``"chosen_reply"``, ``"rejected_reply"``."""
    a_wins = noisy_preferences(
        pairs["gold_a"], pairs["gold_b"], tau, torch.Generator().manual_seed(seed)
    )
    triples = list(zip(pairs["prompt"], pairs["a"], pairs["b"], a_wins.tolist()))
    chosen = [x + (a if w else b) + "\n" for x, a, b, w in triples]
    rejected = [x + (b if w else a) + "\n" for x, a, b, w in triples]
    pad_id = tokenizer.encode(" ")[0]
    margin = torch.where(
        a_wins, pairs["gold_a"] - pairs["gold_b"], pairs["gold_b"] - pairs["gold_a"]
    )
    return {
        "chosen": sequences(chosen, tokenizer.encode, instructions.BLOCK, pad_id),
        "rejected": sequences(rejected, tokenizer.encode, instructions.BLOCK, pad_id),
        "gold_margin": margin,
        "prompt": list(pairs["prompt"]),
        "chosen_reply": [a if w else b for _, a, b, w in triples],
        "rejected_reply": [b if w else a for _, a, b, w in triples],
    }


def reward_config() -> dict:
    """The ``gpt-reward`` recipe at the current budget: :data:`PREFERENCE_RECIPE` with the number
    of prompts per part, the steps and the validation interval of notebook 2, and the
    ``gpt-instruct`` recipe it starts from (under ``"policy"``)."""
    return {
        **PREFERENCE_RECIPE,
        "policy": instruct_config(),
        "prompts": {
            "train": budget.pick(test=50, full=2000),
            "val": budget.pick(test=100, full=1000),
            "test": budget.pick(test=100, full=1000),
        },
        "steps": budget.pick(test=30, full=600),
        "eval_every": budget.pick(test=10, full=50),
    }


def _build_reward(config: dict) -> nn.Module:
    return RewardModel(lm.build_gpt(config["policy"]["base"]))


def _train_reward(model: RewardModel, config: dict) -> dict:
    device = next(model.parameters()).device
    policy = zoo.load("gpt-instruct", device=device, quiet=True)
    model.trunk.load_state_dict(policy.state_dict())
    with seeded(config["seed"]):  # the head starts where notebook 2's does, after seed(0)
        model.head.reset_parameters()
    tokenizer, known, words = lm.char_data().tokenizer, instructions.known_words(), use_words()
    labelled = {}
    for part in ("train", "val"):
        pairs = sample_pairs(
            policy,
            words[part],
            config["prompts"][part],
            config["replies"][part],
            config["seeds"][part],
            tokenizer,
            known,
        )
        labelled[part] = label_pairs(pairs, config["tau"], config["label_seeds"][part], tokenizer)
    history = train_reward_model(
        model,
        labelled["train"]["chosen"],
        labelled["train"]["rejected"],
        val=(labelled["val"]["chosen"], labelled["val"]["rejected"]),
        steps=config["steps"],
        lr=config["lr"],
        batch_size=config["batch_size"],
        seed=config["seed"],
        eval_every=config["eval_every"],
        title="gpt-reward",
    )
    return dict(history.as_meta(), eval_step=history.eval_step, eval_loss=history.eval_loss)


REWARD_RECIPE = zoo.Recipe(
    "gpt-reward",
    reward_config,
    _build_reward,
    _train_reward,
    "the reward model of notebook 2: gpt-instruct with a scalar head, trained on noisy "
    "preferences between its sampled replies to Use prompts",
)


# -- optimising against the reward: best-of-n and RL with a KL penalty --------------------------


def best_of_n_kl(n: int) -> float:
    r""":math:`\log n - \frac{n - 1}{n}`: an upper bound on the KL divergence from the policy to
    its best-of-``n`` (the reply of highest reward among ``n`` samples), the value Stiennon et al.
    (2020) used for it. It is close to the true divergence when no single output is likely to
    recur among the ``n`` samples, and loose when one is (Beirami et al. 2024)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"best_of_n_kl: n must be a positive int, got {n!r}")
    return math.log(n) - (n - 1) / n


def best_of_n(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices ``(P, N // n)`` into the last axis of ``scores`` ``(P, N)``: each consecutive group
    of ``n`` samples of a prompt gives the index of its highest score (the first on a tie)."""
    if scores.ndim != 2 or n < 1 or scores.shape[1] % n:
        raise ValueError(
            f"best_of_n: expected scores (P, N) with N a multiple of n, got "
            f"{tuple(scores.shape)} and n={n}"
        )
    groups = scores.view(scores.shape[0], -1, n)
    return groups.argmax(-1) + n * torch.arange(groups.shape[1], device=scores.device)


def reinforce_loss(
    log_probs: torch.Tensor,
    reward: torch.Tensor,
    reference_log_probs: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    r"""REINFORCE with a baseline on the KL-penalised reward of sampled replies ``(B,)``.

    With :math:`R_i = r(x_i, y_i) - \beta\,[\log\pi(y_i \mid x_i) - \log\pi_\text{ref}(y_i \mid
    x_i)]` (Stiennon et al. 2020, section 3.4) and the batch's mean :math:`\bar R` as the baseline,

    .. math::
        \mathcal{L} = -\frac{1}{B}\sum_i (R_i - \bar R)\,\log \pi(y_i \mid x_i),

    where :math:`R_i - \bar R` is a constant (no gradient flows through it). Its gradient is an
    estimate of :math:`-\nabla\,\mathbb{E}_{y \sim \pi}[R]` (Williams 1992).
    """
    if not beta >= 0:
        raise ValueError(f"reinforce_loss: beta must be >= 0, got {beta}")
    if not log_probs.shape == reward.shape == reference_log_probs.shape or log_probs.ndim != 1:
        raise ValueError(
            "reinforce_loss: expected log-probabilities, rewards and reference log-probabilities "
            f"of one shape (B,), got {tuple(log_probs.shape)}, {tuple(reward.shape)} and "
            f"{tuple(reference_log_probs.shape)}"
        )
    penalised = (reward - beta * (log_probs - reference_log_probs)).detach()
    return -((penalised - penalised.mean()) * log_probs).mean()


def reply_tensors(
    prompts: Sequence[str], replies: Sequence[str], tokenizer
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sft_tensors` of ``prompt`` and ``reply + "\\n"``: the inputs and targets whose
    response tokens are the reply and the newline that ends it."""
    pairs = [(p, r + "\n") for p, r in zip(prompts, replies, strict=True)]
    return sft_tensors(pairs, tokenizer.encode, instructions.BLOCK, tokenizer.encode(" ")[0])


@torch.no_grad()
def reply_kl(
    policy: nn.Module,
    reference: nn.Module,
    prompts: Sequence[str],
    replies: Sequence[str],
    tokenizer,
    batch_size: int = 256,
) -> torch.Tensor:
    """:func:`kl_per_token` ``(N,)`` of each reply (with its newline), on the CPU: averaged over
    replies sampled from ``policy``, an estimate of :math:`\\mathrm{KL}(\\pi \\,\\|\\,
    \\pi_\\text{ref})` per reply."""
    x, y = reply_tensors(prompts, replies, tokenizer)
    device = next(policy.parameters()).device
    out = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        out.append(kl_per_token(policy(xb)[0], reference(xb)[0], yb).cpu())
    return torch.cat(out)


def train_rl(
    policy: nn.Module,
    reference: nn.Module,
    reward_model: RewardModel,
    prompts: Sequence[str],
    tokenizer,
    *,
    steps: int,
    lr: float,
    beta: float,
    batch_size: int = 64,
    seed: int = 0,
    eval_fn: Callable[[nn.Module], float] | None = None,
    eval_every: int | None = None,
    title: str = "RL with a KL penalty",
) -> train.History:
    """Tune ``policy`` to maximise :math:`\\mathbb{E}[r] - \\beta\\,\\mathrm{KL}(\\pi \\,\\|\\,
    \\pi_\\text{ref})` with :func:`reinforce_loss`.

    Each step draws ``batch_size`` prompts from ``prompts`` (with replacement, a generator seeded
    with ``seed``), samples one reply to each from the current policy at temperature 1
    (:func:`respond`), scores it with ``reward_model`` and ``reference``, and takes one AdamW step
    (constant ``lr``, no weight decay, gradient norm clipped at 1). ``eval_fn`` as in
    :func:`fmbook.train.fit`. The loss is a surrogate whose value says nothing of progress (its
    gradient is what matters), so no loss curve is drawn: measure the policy with ``eval_fn``.
    """
    if isinstance(prompts, str) or not prompts:
        raise ValueError("train_rl: prompts must be a non-empty list of strings")
    device = next(policy.parameters()).device
    generator = torch.Generator().manual_seed(seed)

    def batch():
        rows = torch.randint(len(prompts), (batch_size,), generator=generator).tolist()
        asked = [prompts[i] for i in rows]
        draw = int(torch.randint(2**31 - 1, (1,), generator=generator))
        replies = respond(
            policy,
            asked,
            tokenizer.encode,
            tokenizer.decode,
            SFT_RECIPE["max_new_tokens"],
            greedy=False,
            seed=draw,
        )
        texts = [p + r + "\n" for p, r in zip(asked, replies)]
        reward = rewards(
            reward_model,
            *sequences(texts, tokenizer.encode, instructions.BLOCK, tokenizer.encode(" ")[0]),
        )
        x, y = (t.to(device) for t in reply_tensors(asked, replies, tokenizer))
        with torch.no_grad():
            reference_log_probs = sequence_log_prob(reference, x, y)
        return x, y, reward.to(device), reference_log_probs

    def loss_fn(model, xy):
        x, y, reward, reference_log_probs = xy
        return reinforce_loss(sequence_log_prob(model, x, y), reward, reference_log_probs, beta)

    optimizer = train.adamw(policy.parameters(), device, lr=lr, weight_decay=0.0)
    return train.fit(
        policy,
        loss_fn,
        batch,
        optimizer,
        steps,
        eval_fn=eval_fn,
        eval_every=eval_every,
        grad_clip=1.0,
        plot=False,
        title=title,
    )


def train_dpo(
    policy: nn.Module,
    reference: nn.Module,
    chosen: tuple[torch.Tensor, torch.Tensor],
    rejected: tuple[torch.Tensor, torch.Tensor],
    *,
    steps: int,
    lr: float,
    beta: float,
    batch_size: int = 32,
    seed: int = 0,
    eval_fn: Callable[[nn.Module], float] | None = None,
    eval_every: int | None = None,
    title: str = "DPO",
) -> train.History:
    """Tune ``policy`` on preference pairs with :func:`dpo_loss`: row ``i`` of ``chosen``
    (inputs, targets of :func:`reply_tensors`) was preferred to row ``i`` of ``rejected``.

    Batches of ``batch_size`` pairs are drawn with replacement with ``seed``; the reference's
    log-probabilities are computed for each batch without a gradient. AdamW at a constant
    ``lr``, no weight decay, gradient norm clipped at 1; ``eval_fn`` as in
    :func:`fmbook.train.fit`.
    """
    (w_x, w_y), (l_x, l_y) = chosen, rejected
    if not w_x.shape == w_y.shape == l_x.shape == l_y.shape or w_x.ndim != 2:
        raise ValueError(
            "train_dpo: chosen and rejected must be (inputs, targets) of one shape (N, T), got "
            f"{tuple(w_x.shape)}, {tuple(w_y.shape)}, {tuple(l_x.shape)} and {tuple(l_y.shape)}"
        )
    device = next(policy.parameters()).device
    generator = torch.Generator().manual_seed(seed)

    def batch():
        rows = torch.randint(len(w_x), (batch_size,), generator=generator)
        x = torch.cat([w_x[rows], l_x[rows]]).to(device)
        y = torch.cat([w_y[rows], l_y[rows]]).to(device)
        with torch.no_grad():
            reference_log_probs = sequence_log_prob(reference, x, y)
        return x, y, reference_log_probs

    def loss_fn(model, batch):
        x, y, ref = batch
        log_probs = sequence_log_prob(model, x, y)
        b = batch_size
        return dpo_loss(log_probs[:b], log_probs[b:], ref[:b], ref[b:], beta)

    optimizer = train.adamw(policy.parameters(), device, lr=lr, weight_decay=0.0)
    return train.fit(
        policy,
        loss_fn,
        batch,
        optimizer,
        steps,
        eval_fn=eval_fn,
        eval_every=eval_every,
        grad_clip=1.0,
        title=title,
    )


# -- RL, DPO and best-of-n compared: the settings of notebook 4 and the sweep's choice ----------

ALIGN_RECIPE = {
    "steps": 80,
    "lr": 3e-4,
    "rl_batch": 64,
    "dpo_batch": 32,
    "seed": 0,
    "n_val": 150,
    "n_test": 300,
}
"""Optimising against preferences in the alignment chapter: RL (:func:`train_rl`) and DPO
(:func:`train_dpo`) take the same number of steps at the same learning rate, each step on 64
sequences (64 sampled replies, or 32 pairs); they are measured on ``n_val`` prompts about the
validation words and ``n_test`` about the test words (:func:`use_prompts`)."""
ALIGN_SWEEP_FILE = Path(__file__).parent / "data" / "align_sweep.json"
"""The validation measurements of ``benchmarks/tune_align.py``."""
PROMPT_SEEDS = {"val": 21, "test": 22}


def use_prompts(part: str, n: int) -> tuple[list[str], list[str]]:
    """``n`` words drawn (with replacement, seeded per part) from the ``part`` words of
    :func:`use_words`, and their prompts ``"Use: w\\n"``."""
    if part not in PROMPT_SEEDS:
        raise ValueError(f"use_prompts: part must be one of {sorted(PROMPT_SEEDS)}, got {part!r}")
    words = use_words()[part]
    rng = np.random.default_rng(PROMPT_SEEDS[part])
    asked = [words[i] for i in rng.integers(len(words), size=n)]
    return asked, [f"Use: {w}\n" for w in asked]


def preference_data(policy: nn.Module, part: str, tokenizer, known: frozenset[str]) -> dict:
    """The labelled pairs of ``part`` as the ``gpt-reward`` recipe builds them (:func:`sample_pairs`
    and :func:`label_pairs` with the seeds and sizes of :func:`reward_config`): ``"chosen"`` and
    ``"rejected"`` as the reward model reads them (ids, lengths), and ``"chosen_tokens"`` and
    ``"rejected_tokens"`` as a policy reads them, the (inputs, targets) of :func:`reply_tensors`
    for :func:`sequence_log_prob` and :func:`train_dpo`."""
    config = reward_config()
    pairs = sample_pairs(
        policy,
        use_words()[part],
        config["prompts"][part],
        config["replies"][part],
        config["seeds"][part],
        tokenizer,
        known,
    )
    labelled = label_pairs(pairs, config["tau"], config["label_seeds"][part], tokenizer)
    return {
        **labelled,
        "chosen_tokens": reply_tensors(labelled["prompt"], labelled["chosen_reply"], tokenizer),
        "rejected_tokens": reply_tensors(labelled["prompt"], labelled["rejected_reply"], tokenizer),
    }


def load_alignment_sweep() -> dict:
    """The measurements of ``benchmarks/tune_align.py``: ``sweep["methods"][method]`` maps each
    beta to ``{steps: {"gold", "kl"}}`` for ``"rl"`` and ``"dpo"``, and each n to
    ``{"gold", "kl"}`` for ``"best_of_n"``."""
    return json.loads(ALIGN_SWEEP_FILE.read_text(encoding="utf-8"))


def chosen_alignment(method: str, kl_budget: float) -> dict:
    """The setting of ``method`` (``"rl"``, ``"dpo"`` or ``"best_of_n"``) with the highest mean
    gold reward on the validation prompts among those at most ``kl_budget`` nats from
    ``gpt-instruct`` there, in ``benchmarks/tune_align.py``'s sweep (ties: the fewer steps or the
    smaller n, then the larger beta): ``{"beta", "steps", "gold", "kl"}`` for RL and DPO,
    ``{"n", "gold", "kl"}`` for best-of-n."""
    sweep = load_alignment_sweep()
    if method not in sweep["methods"]:
        raise ValueError(
            f"chosen_alignment: unknown method {method!r}; swept: {sorted(sweep['methods'])}"
        )
    runs = sweep["methods"][method]
    if method == "best_of_n":
        candidates = [
            (m["gold"], -int(n), {"n": int(n), **m})
            for n, m in runs.items()
            if m["kl"] <= kl_budget
        ]
    else:
        candidates = [
            (m["gold"], -int(steps), float(beta), {"beta": float(beta), "steps": int(steps), **m})
            for beta, by_steps in runs.items()
            for steps, m in by_steps.items()
            if m["kl"] <= kl_budget and int(steps) > 0
        ]
    if not candidates:
        raise ValueError(f"chosen_alignment: no {method} setting within {kl_budget} nats")
    return max(candidates, key=lambda c: c[:-1])[-1]
