import pytest
import torch

from fmbook.diffusion import MLPDenoiser, NoiseSchedule, ResidualMLPDenoiser
from fmbook.objectives import (
    IGNORE_INDEX,
    mask_tokens,
    masked_token_loss,
    next_token_loss,
    ngram_loss,
    noise_prediction_loss,
)


def test_noise_prediction_loss_is_the_squared_error_of_the_noise_written_out():
    torch.manual_seed(0)
    s = NoiseSchedule.cosine(T=100)
    m = ResidualMLPDenoiser(64, T=100, num_classes=10, width=32, depth=1)
    x0, y = torch.rand(8, 64) * 2 - 1, torch.arange(8)
    loss = noise_prediction_loss(m, x0, s, y, 0.5, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, 100, (8,), generator=g)
    eps = torch.randn(8, 64, generator=g)
    c = torch.where(torch.rand(8, generator=g) < 0.5, 10, y)
    assert (c == 10).any() and (c != 10).any()  # some labels hidden, some kept
    abar = s.alphas_cumprod[t].float()[:, None]
    by_hand = ((m(abar.sqrt() * x0 + (1 - abar).sqrt() * eps, t, c) - eps) ** 2).mean()
    torch.testing.assert_close(loss, by_hand)


def test_noise_prediction_loss_without_labels_draws_from_the_global_generator():
    s = NoiseSchedule.linear(T=50)
    m = MLPDenoiser(2, T=50, width=16, depth=1)
    x0 = torch.randn(32, 2)
    torch.manual_seed(1)
    t = torch.randint(50, (32,))
    eps = torch.randn(32, 2)
    abar = s.alphas_cumprod.float()[t][:, None]
    by_hand = ((m(abar.sqrt() * x0 + (1 - abar).sqrt() * eps, t) - eps) ** 2).mean()
    torch.manual_seed(1)
    torch.testing.assert_close(noise_prediction_loss(m, x0, s), by_hand)
    # a perfect noise predictor scores zero
    g = torch.Generator().manual_seed(0)
    torch.randint(0, 50, (32,), generator=g)  # the steps come first
    noise = torch.randn(32, 2, generator=g)

    def oracle(x_t, t):
        return noise

    assert noise_prediction_loss(oracle, x0, s, generator=torch.Generator().manual_seed(0)) == 0


def test_noise_prediction_loss_rejects_bad_input():
    s = NoiseSchedule.cosine(T=10)
    m = ResidualMLPDenoiser(4, T=10, num_classes=3, width=8, depth=1)
    x0, y = torch.zeros(5, 4), torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match="p_uncond"):
        noise_prediction_loss(m, x0, s, y, 1.0)
    with pytest.raises(ValueError, match="no labels"):
        noise_prediction_loss(m, x0, s, None, 0.1)
    with pytest.raises(ValueError, match="one label per example"):
        noise_prediction_loss(m, x0, s, y[:4])


def test_mask_tokens_follows_bert_statistics_over_a_million_tokens():
    V, mask_id, pad_id = 100, 100, 0
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, V, (1000, 1000), generator=g)
    ids[:, -50:] = pad_id  # padding is never selected
    inputs, labels = mask_tokens(ids, mask_id, V, special_ids=(pad_id,), generator=g)
    eligible = ids != pad_id
    selected = labels != IGNORE_INDEX
    assert not selected[~eligible].any()
    assert torch.equal(labels[selected], ids[selected])
    share = selected.sum().item() / eligible.sum().item()
    assert abs(share - 0.15) < 0.005
    n = selected.sum().item()
    masked = (inputs == mask_id) & selected
    kept = (inputs == ids) & selected
    replaced = selected & ~masked & ~kept
    assert abs(masked.sum().item() / n - 0.8) < 0.005
    # a random replacement equals the original with probability 1/98: count those as kept
    assert abs((replaced.sum().item() + kept.sum().item()) / n - 0.2) < 0.005
    assert abs(kept.sum().item() / n - (0.1 + 0.1 / 98)) < 0.005
    assert not torch.isin(inputs[replaced], torch.tensor([pad_id, mask_id])).any()
    assert torch.equal(inputs[~selected], ids[~selected])


def test_mask_tokens_bad_input():
    with pytest.raises(TypeError, match="torch.long"):
        mask_tokens(torch.zeros(3), 5, 5)
    with pytest.raises(ValueError, match=r"mask_prob must be in \(0, 1\)"):
        mask_tokens(torch.zeros(3, dtype=torch.long), 5, 5, mask_prob=0.0)


def test_losses_and_ngram_baselines():
    logits = torch.zeros(1, 4, 5)
    targets = torch.tensor([[0, 1, 2, 3]])
    assert next_token_loss(logits, targets).item() == pytest.approx(
        torch.log(torch.tensor(5.0)).item()
    )
    labels = torch.tensor([[IGNORE_INDEX, 1, IGNORE_INDEX, IGNORE_INDEX]])
    logits[0, 1, 1] = 10.0
    assert masked_token_loss(logits, labels).item() < 1e-3
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        next_token_loss(torch.zeros(4, 5), targets)
    text = torch.tensor([0, 1] * 50)
    # unigram: both tokens have probability 1/2 -> ln 2; bigram: 0 -> 1 always (add-one: 51/52)
    assert ngram_loss(text, text, 2, 1) == pytest.approx(0.6931, abs=1e-3)
    assert ngram_loss(text, text, 2, 2) == pytest.approx(
        -torch.log(torch.tensor(51 / 52)).item(), abs=1e-3
    )
    with pytest.raises(ValueError, match="order must be 1"):
        ngram_loss(text, text, 2, 3)
