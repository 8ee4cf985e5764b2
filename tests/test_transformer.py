import pytest
import torch

import fmbook
from fmbook.transformer import GPT, GPTConfig


def tiny(**kw):
    return GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16, **kw))


def test_shapes_and_loss_at_init_is_near_log_vocab():
    fmbook.seed(0)
    model = tiny()
    idx = torch.randint(11, (3, 16))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 16, 11)
    assert abs(loss.item() - torch.log(torch.tensor(11.0)).item()) < 0.3
    assert model(idx)[1] is None


def test_causal_past_logits_ignore_the_future():
    fmbook.seed(0)
    model = tiny().eval()
    a = torch.randint(11, (1, 16))
    b = a.clone()
    b[0, 10:] = (b[0, 10:] + 1) % 11
    torch.testing.assert_close(model(a)[0][:, :10], model(b)[0][:, :10])
    assert not torch.allclose(model(a)[0][:, 10:], model(b)[0][:, 10:])


def test_weights_are_tied():
    model = tiny()
    assert model.lm_head.weight is model.wte.weight


def test_generate_appends_and_respects_top_k_one_as_greedy():
    fmbook.seed(0)
    model = tiny()
    idx = torch.zeros(1, 3, dtype=torch.long)
    out = model.generate(idx, 20, top_k=1)
    assert out.shape == (1, 23) and torch.equal(out[:, :3], idx)
    again = model.generate(idx, 20, top_k=1)
    assert torch.equal(out, again)
    logits, _ = model(out[:, -16:-1])
    assert out[0, -1].item() == logits[0, -1].argmax().item()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"temperature": 0.0}, "temperature must be > 0"), ({"top_k": 0}, "top_k must be >= 1")],
)
def test_generate_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny().generate(torch.zeros(1, 2, dtype=torch.long), 3, **kwargs)


def test_forward_rejects_bad_input():
    model = tiny()
    with pytest.raises(ValueError, match="longer than block_size=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.long"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"\(batch, time\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="targets must have the shape"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n_embd": 15}, "divisible by n_head"),
        ({"n_layer": 0}, "n_layer must be a positive int"),
        ({"dropout": 1.0}, "dropout must be in"),
    ],
)
def test_config_rejects_bad_sizes(kw, match):
    args = {"vocab_size": 11, "n_head": 2, "n_embd": 16} | kw
    with pytest.raises(ValueError, match=match):
        GPTConfig(**args)


from fmbook.transformer import KVCache, MultiHeadAttention, causal_mask, scaled_dot_product_attention  # noqa: E402


@pytest.mark.parametrize("causal", [True, False])
def test_written_out_attention_equals_pytorch(causal):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 5, generator=g) for _ in range(3))
    mask = causal_mask(7) if causal else None
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 7))
    if causal:
        assert torch.all(weights.triu(1) == 0)


def test_attention_known_value():
    # one query, two keys: scores (q.k)/sqrt(d) = (0, 2/sqrt(2)) -> softmax weights by hand
    q = torch.tensor([[[1.0, 1.0]]])
    k = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])
    v = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    out, w = scaled_dot_product_attention(q, k, v)
    e = torch.exp(torch.tensor(2 / 2**0.5))
    torch.testing.assert_close(w, torch.tensor([[[1 / (1 + e), e / (1 + e)]]]))
    torch.testing.assert_close(out, w)


def test_attention_rejects_bad_shapes_and_masks():
    with pytest.raises(ValueError, match="must agree"):
        scaled_dot_product_attention(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), torch.zeros(1, 2, 4))
    with pytest.raises(TypeError, match="boolean"):
        scaled_dot_product_attention(
            torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.ones(2, 2)
        )
    with pytest.raises(ValueError, match="T must be >= 1"):
        causal_mask(0)


@pytest.mark.parametrize("causal", [True, False])
def test_multi_head_attention_weights_path_equals_fused_path(causal):
    fmbook.seed(0)
    mha = MultiHeadAttention(16, 4, causal=causal)
    x = torch.randn(2, 9, 16)
    y_weights, w = mha(x, need_weights=True)
    torch.testing.assert_close(mha(x), y_weights)
    assert w.shape == (2, 4, 9, 9)


def test_bidirectional_attention_sees_the_future():
    fmbook.seed(0)
    mha = MultiHeadAttention(8, 2, causal=False)
    a = torch.randn(1, 6, 8)
    b = a.clone()
    b[0, -1] += 1.0
    assert not torch.allclose(mha(a)[:, 0], mha(b)[:, 0])


def test_kv_cache_gives_the_same_logits_as_the_full_pass():
    fmbook.seed(0)
    model = tiny().eval()
    idx = torch.randint(11, (2, 12))
    full, _ = model(idx)
    cache = KVCache(model.config.n_layer)
    first, _ = model(idx[:, :5], cache=cache)
    steps = [model(idx[:, t : t + 1], cache=cache)[0] for t in range(5, 12)]
    torch.testing.assert_close(torch.cat([first, *steps], dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 12
    with pytest.raises(ValueError, match="exceed block_size"):
        model(torch.zeros(2, 5, dtype=torch.long), cache=cache)


def test_greedy_generation_is_identical_with_and_without_cache():
    fmbook.seed(0)
    model = tiny()
    idx = torch.randint(11, (2, 3))
    with_cache = model.generate(idx, 13, top_k=1, use_cache=True)
    without = model.generate(idx, 13, top_k=1, use_cache=False)
    assert torch.equal(with_cache, without)
    long = model.generate(idx, 40, top_k=1, use_cache=True)  # past block_size: the cache restarts
    assert long.shape == (2, 43)


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    draws = {GPT._sample(logits, 1.0, None, 0.75, g).item() for _ in range(200)}
    assert draws == {0, 1}  # 0.5 + 0.3 reaches 0.75; tokens 2 and 3 are cut
    draws = {GPT._sample(logits, 1.0, None, 0.01, g).item() for _ in range(50)}
    assert draws == {0}  # a tiny nucleus is greedy


def test_top_p_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        tiny().generate(torch.zeros(1, 2, dtype=torch.long), 1, top_p=1.5)


def test_attention_maps_shape_and_causality():
    fmbook.seed(0)
    model = tiny().eval()
    maps = model.attention_maps(torch.randint(11, (1, 10)))
    assert maps.shape == (2, 1, 2, 10, 10)
    assert torch.all(maps.triu(1) == 0)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 1, 2, 10))


from fmbook.objectives import IGNORE_INDEX, mask_tokens, masked_token_loss, next_token_loss, ngram_loss  # noqa: E402
from fmbook.transformer import BERT  # noqa: E402


def test_bert_sees_both_sides_and_scores_only_masked_positions():
    fmbook.seed(0)
    model = BERT(GPTConfig(vocab_size=12, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    a = torch.randint(11, (1, 10))
    b = a.clone()
    b[0, 9] = (b[0, 9] + 1) % 11
    assert not torch.allclose(model(a)[0][:, 0], model(b)[0][:, 0])  # the future changes the past
    labels = torch.full_like(a, IGNORE_INDEX)
    labels[0, 3] = a[0, 3]
    logits, loss = model(a, labels)
    expected = torch.nn.functional.cross_entropy(logits[0, 3:4], a[0, 3:4])
    torch.testing.assert_close(loss, expected)
    with pytest.raises(NotImplementedError, match="no left-to-right generate"):
        model.generate(a, 3)


def test_features_are_the_input_of_the_output_layer():
    fmbook.seed(0)
    model = tiny().eval()
    idx = torch.randint(11, (2, 7))
    torch.testing.assert_close(model.lm_head(model.features(idx)), model(idx)[0])


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
    assert next_token_loss(logits, targets).item() == pytest.approx(torch.log(torch.tensor(5.0)).item())
    labels = torch.tensor([[IGNORE_INDEX, 1, IGNORE_INDEX, IGNORE_INDEX]])
    logits[0, 1, 1] = 10.0
    assert masked_token_loss(logits, labels).item() < 1e-3
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        next_token_loss(torch.zeros(4, 5), targets)
    text = torch.tensor([0, 1] * 50)
    # unigram: both tokens have probability 1/2 -> ln 2; bigram: 0 -> 1 always (add-one: 51/52)
    assert ngram_loss(text, text, 2, 1) == pytest.approx(0.6931, abs=1e-3)
    assert ngram_loss(text, text, 2, 2) == pytest.approx(-torch.log(torch.tensor(51 / 52)).item(), abs=1e-3)
    with pytest.raises(ValueError, match="order must be 1"):
        ngram_loss(text, text, 2, 3)
