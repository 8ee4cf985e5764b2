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

import torch
import torch.nn.functional as F
from torch import nn

from fmbook.objectives import IGNORE_INDEX, next_token_loss


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
        """Rewards ``(B,)`` of the sequences ``idx`` ``(B, T)`` of real lengths ``lengths``."""
        if lengths.shape != (idx.shape[0],) or bool(
            ((lengths < 1) | (lengths > idx.shape[1])).any()
        ):
            raise ValueError(
                f"RewardModel: lengths must be ({idx.shape[0]},) values in [1, {idx.shape[1]}], "
                f"got shape {tuple(lengths.shape)}"
            )
        states = self.trunk.hidden(idx)  # causal: the last real token never sees the padding
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
