r"""Training objectives: of language models (with the count baselines they are measured against)
and of diffusion models.

* next-token (causal, GPT):
  :math:`\mathcal{L} = -\frac1T \sum_t \log p_\theta(x_{t+1} \mid x_{\le t})`;
* masked-token (BERT): hide 15% of the positions and predict them from both
  sides, :math:`\mathcal{L} = -\frac{1}{|M|} \sum_{t \in M} \log p_\theta(x_t \mid \tilde x)`,
  where :math:`\tilde x` is the corrupted input (Devlin et al. 2019, section 3.1);
* noise prediction (diffusion, Ho et al. 2020, eq. 14):
  :math:`\mathcal{L} = \mathbb{E}\,\lVert \epsilon - \epsilon_\theta(\sqrt{\bar\alpha_t}\,x_0
  + \sqrt{1-\bar\alpha_t}\,\epsilon, t)\rVert^2`,
  optionally with a class label that is sometimes hidden (Ho & Salimans 2021).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fmbook.runtime import draw_device

IGNORE_INDEX = -100  # label of positions that do not count in the loss (PyTorch's default)


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` ``(B, T, V)`` against the next tokens ``targets``
    ``(B, T)``."""
    if logits.ndim != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"next_token_loss: expected logits (B, T, V) and targets (B, T), "
            f"got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def mask_tokens(
    ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    *,
    mask_prob: float = 0.15,
    special_ids: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption: select ``mask_prob`` of the positions, then 80% [MASK], 10% random,
    10% kept.

    Returns ``(inputs, labels)``: ``labels`` holds the original token at the
    selected positions and ``-100`` (ignored by the loss) everywhere else.
    Positions holding ``mask_id`` or a ``special_ids`` token (padding, say)
    are never selected. Random replacements are drawn uniformly from the
    ordinary tokens ``[0, vocab_size)`` minus the special ones.
    """
    if not isinstance(ids, torch.Tensor) or ids.dtype != torch.long:
        raise TypeError(
            f"mask_tokens: ids must be a torch.long tensor, got {getattr(ids, 'dtype', type(ids))}"
        )
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_tokens: mask_prob must be in (0, 1), got {mask_prob}")
    if vocab_size < 2:
        raise ValueError(f"mask_tokens: vocab_size must be >= 2, got {vocab_size}")
    special = torch.tensor(sorted({mask_id, *special_ids}), device=ids.device)
    gen_device = draw_device(generator, ids.device)

    def rand(shape):  # drawn on the generator's device, then moved: the same masks on every device
        return torch.rand(shape, generator=generator, device=gen_device).to(ids.device)

    eligible = ~torch.isin(ids, special)
    selected = (rand(ids.shape) < mask_prob) & eligible
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    roll = rand(ids.shape)
    to_mask = selected & (roll < 0.8)
    to_random = selected & (roll >= 0.8) & (roll < 0.9)
    ordinary = torch.tensor(
        [t for t in range(vocab_size) if t not in set(special.tolist())], device=ids.device
    )
    pick = (rand(ids.shape) * len(ordinary)).long().clamp_(max=len(ordinary) - 1)
    inputs = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    inputs = torch.where(to_random, ordinary[pick], inputs)
    return inputs, labels


def masked_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the selected positions only (labels ``!= -100``)."""
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"masked_token_loss: expected logits (B, T, V) and labels (B, T), "
            f"got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX
    )


def ngram_loss(
    train_ids: torch.Tensor, eval_ids: torch.Tensor, vocab_size: int, order: int
) -> float:
    r"""Cross-entropy (nats per token) on ``eval_ids`` of an add-one-smoothed count model.

    ``order=1`` is the unigram model :math:`p(x_t)`, ``order=2`` the bigram
    model :math:`p(x_t \mid x_{t-1})`, both counted on ``train_ids``.
    Counted in float64 on the CPU (MPS has no float64).
    """
    if order not in (1, 2):
        raise ValueError(f"ngram_loss: order must be 1 (unigram) or 2 (bigram), got {order}")
    for name, t in (("train_ids", train_ids), ("eval_ids", eval_ids)):
        if t.ndim != 1 or t.dtype.is_floating_point:
            raise ValueError(
                f"ngram_loss: {name} must be a 1-D integer tensor, got {t.dtype} {tuple(t.shape)}"
            )
    V = vocab_size
    train_ids, eval_ids = train_ids.long().cpu(), eval_ids.long().cpu()
    if order == 1:
        counts = torch.bincount(train_ids, minlength=V).double() + 1
        return -(counts / counts.sum()).log()[eval_ids].mean().item()
    pairs = train_ids[:-1] * V + train_ids[1:]
    counts = torch.bincount(pairs, minlength=V * V).double().view(V, V) + 1
    logp = (counts / counts.sum(dim=1, keepdim=True)).log()
    return -logp[eval_ids[:-1], eval_ids[1:]].mean().item()


def bits(nats: float) -> float:
    r"""Convert a loss from nats to bits: divide by :math:`\ln 2`."""
    return nats / math.log(2)


def noise_prediction_loss(
    model: torch.nn.Module,
    x0: torch.Tensor,
    schedule,
    labels: torch.Tensor | None = None,
    p_uncond: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Ho et al.'s simple loss :math:`L_\text{simple}` (2020, eq. 14) for one batch ``x0``:

    .. math:: \mathbb{E}_{x_0, t, \epsilon}\,\big\lVert \epsilon
              - \epsilon_\theta(\sqrt{\bar\alpha_t}\,x_0
              + \sqrt{1-\bar\alpha_t}\,\epsilon,\ t\,[,\ c'])
              \big\rVert^2 ,

    with :math:`t` uniform over the ``schedule.T`` steps (a :class:`fmbook.diffusion.NoiseSchedule`)
    and :math:`\epsilon \sim \mathcal{N}(0, I)`. Without ``labels`` the model is called as
    ``model(x_t, t)``. With ``labels`` it is called as ``model(x_t, t, c')``, where
    :math:`c' = \varnothing` (``model.null_class``) with probability ``p_uncond``, else the label
    (Ho & Salimans 2021). Random numbers are drawn in the order t, noise, hidden labels, from
    ``generator`` (default: torch's global one) on its device, and the noised data computed on the
    CPU: with a CPU generator a run is the same on every device.
    """
    if not 0 <= p_uncond < 1:
        raise ValueError(f"noise_prediction_loss: p_uncond must be in [0, 1), got {p_uncond}")
    if labels is None and p_uncond:
        raise ValueError("noise_prediction_loss: p_uncond > 0 hides labels, but no labels given")
    if labels is not None and labels.shape != x0.shape[:1]:
        raise ValueError(
            f"noise_prediction_loss: expected one label per example, {len(x0)}, "
            f"got labels of shape {tuple(labels.shape)}"
        )
    device, B, at = x0.device, len(x0), draw_device(generator, "cpu")
    t = torch.randint(0, schedule.T, (B,), generator=generator, device=at).cpu()
    noise = torch.randn(x0.shape, generator=generator, device=at).cpu()
    x_t = schedule.q_sample(x0.cpu(), t, noise).to(device)
    if labels is None:
        eps = model(x_t, t.to(device))
    else:
        hide = torch.rand(B, generator=generator, device=at).cpu() < p_uncond
        c = torch.where(hide, model.null_class, labels.cpu())
        eps = model(x_t, t.to(device), c.to(device))
    return (eps - noise.to(device)).square().mean()
