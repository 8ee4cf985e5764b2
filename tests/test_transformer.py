import pytest
import torch

import fmbook
from fmbook.objectives import (
    IGNORE_INDEX,
)
from fmbook.transformer import (
    BERT,
    GPT,
    Block,
    GPTConfig,
    KVCache,
    MultiHeadAttention,
    Transformer,
    causal_mask,
    scaled_dot_product_attention,
)


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


def test_stream_yields_the_tokens_of_generate_one_step_at_a_time():
    fmbook.seed(0)
    model = tiny().eval()
    idx = torch.randint(11, (2, 5))
    for use_cache in (True, False):  # 30 steps: past the block, where the cache restarts
        steps = model.stream(
            idx, 30, 0.9, generator=torch.Generator().manual_seed(1), use_cache=use_cache
        )
        pieces = list(steps)
        assert all(p.shape == (2, 1) for p in pieces) and len(pieces) == 30
        whole = model.generate(
            idx, 30, 0.9, generator=torch.Generator().manual_seed(1), use_cache=use_cache
        )
        assert torch.equal(torch.cat([idx, *pieces], dim=1), whole)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        model.stream(idx, 3, temperature=0)  # checked at the call, before the first step
    with pytest.raises(ValueError, match="training mode"):
        model.train().stream(idx, 3)


def test_generate_with_a_stop_token_ends_once_every_row_has_it_and_changes_nothing_before():
    model = tiny()
    idx = torch.tensor([[0, 1, 2], [3, 4, 5]])
    full = model.generate(idx, 40, generator=torch.Generator().manual_seed(0))
    stop = full[0, 5].item()  # a token the first row draws early
    short = model.generate(idx, 40, generator=torch.Generator().manual_seed(0), stop=stop)
    assert torch.equal(short, full[:, : short.shape[1]])  # a prefix of the run without a stop
    new = short[:, 3:]
    assert all((row == stop).any() for row in new)  # every row reached the stop token ...
    assert short.shape[1] == 43 or not (new[:, :-1] == stop).any(1).all()  # ... only just now
    never = model.generate(idx, 10, top_k=1, stop=model.config.vocab_size - 1)
    assert never.shape[1] == 13 or (never[:, 3:] == model.config.vocab_size - 1).any(1).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"top_k": 0}, "top_k must be >= 1"),
        ({"stop": -1}, "stop must be a token id"),
    ],
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
        scaled_dot_product_attention(
            torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)
        )
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


def sample_with_restarts(model, idx, n, generator):
    """The cache's schedule written without a cache: each token from the context since the last
    restart; when that context outgrows the block, it restarts from the last half block."""
    block = model.config.block_size
    start = max(0, idx.shape[1] - block)
    for _ in range(n):
        if idx.shape[1] - start > block:
            start = idx.shape[1] - block // 2
        logits, _ = model(idx[:, start:])
        idx = torch.cat([idx, GPT._sample(logits[:, -1], 1.0, None, None, generator)], dim=1)
    return idx


def test_generation_past_the_block_restarts_the_cache_from_the_last_half_block():
    fmbook.seed(0)
    model = tiny().eval()
    with torch.no_grad():  # larger weights: every token depends strongly on its context
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    idx = torch.randint(11, (2, 3))
    long = model.generate(idx, 40, generator=torch.Generator().manual_seed(1))  # 43 > block 16
    assert torch.equal(long, sample_with_restarts(model, idx, 40, torch.Generator().manual_seed(1)))
    # after a restart the cache holds block // 2 positions, and its logits are a fresh forward's
    cache = KVCache(model.config.n_layer)
    kept = long[:, 20:28]
    torch.testing.assert_close(model(kept, cache=cache)[0], model(kept)[0])
    step, _ = model(long[:, 28:29], cache=cache)
    torch.testing.assert_close(step, model(long[:, 20:29])[0][:, -1:], atol=1e-5, rtol=1e-5)


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


@pytest.mark.parametrize("cls", [GPT, BERT])
def test_attention_maps_are_the_weights_of_the_forward_pass(cls):
    fmbook.seed(0)
    model = cls(GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    idx = torch.randint(11, (2, 9))
    maps = []
    torch.testing.assert_close(model.hidden(idx, maps=maps), model.features(idx))  # same forward
    torch.testing.assert_close(torch.stack(maps), model.attention_maps(idx))
    # layer 2's weights, by hand from the hidden state after layer 1
    block = model.blocks[1]
    x = model.blocks[0](model._embed(idx))
    q, k, _ = block.attn.qkv(block.ln_1(x)).split(16, dim=2)
    q, k = (z.view(2, 9, 2, 8).transpose(1, 2) for z in (q, k))
    scores = q @ k.transpose(-2, -1) / 8**0.5
    if cls is GPT:
        scores = scores.masked_fill(~causal_mask(9), float("-inf"))
    torch.testing.assert_close(maps[1], scores.softmax(-1))


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


def test_gpt_and_bert_are_one_trunk_with_two_masks():
    config = GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16)
    fmbook.seed(0)
    gpt = GPT(config).eval()
    fmbook.seed(0)
    bert = BERT(config).eval()
    assert isinstance(gpt, Transformer) and isinstance(bert, Transformer)
    assert gpt.causal and not bert.causal
    assert all(b.attn.causal for b in gpt.blocks) and not any(b.attn.causal for b in bert.blocks)
    a, b = gpt.state_dict(), bert.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)  # the same weights
    idx = torch.randint(11, (1, 10))
    later = idx.clone()
    later[0, 9] = (later[0, 9] + 1) % 11
    # in the first layer the last query sees the whole sequence under either mask: only it agrees
    first_gpt, first_bert = gpt.attention_maps(idx)[0], bert.attention_maps(idx)[0]
    torch.testing.assert_close(first_gpt[..., -1, :], first_bert[..., -1, :])
    assert not torch.allclose(first_gpt[..., :-1, :], first_bert[..., :-1, :])
    # a change of the last token: the causal past ignores it, the bidirectional one does not
    torch.testing.assert_close(gpt(idx)[0][:, :9], gpt(later)[0][:, :9])
    assert not torch.allclose(bert(idx)[0][:, :9], bert(later)[0][:, :9])
    trunk = Transformer(config, causal=True).eval()
    trunk.load_state_dict(a)
    torch.testing.assert_close(trunk.features(idx), gpt.features(idx))


def test_block_takes_sizes_and_keyword_options():
    fmbook.seed(0)
    block = Block(16, 4, causal=False, dropout=0.0, bias=False)
    assert not block.attn.causal and block.mlp.fc.bias is None and block.ln_1.bias is None
    assert block.mlp.fc.out_features == 64
    with pytest.raises(TypeError):
        Block(16, 4, False)  # causal is keyword-only
    with pytest.raises(ValueError, match="divisible"):
        Block(15, 4)
    x = torch.randn(2, 5, 16)
    y, weights = block(x, need_weights=True)
    torch.testing.assert_close(y, block(x))
    assert weights.shape == (2, 4, 5, 5)


def test_features_are_the_input_of_the_output_layer():
    fmbook.seed(0)
    model = tiny().eval()
    idx = torch.randint(11, (2, 7))
    torch.testing.assert_close(model.lm_head(model.features(idx)), model(idx)[0])


# -- sampling with a generator, for every spelling of the CPU device ----------------------


def _tiny_gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16))


@pytest.mark.parametrize("spelling", [torch.device("cpu"), "cpu"])
def test_sample_draws_from_the_generator_like_multinomial(spelling):
    logits = torch.randn(4, 11, generator=torch.Generator().manual_seed(3))
    got = GPT._sample(logits, 0.7, None, None, torch.Generator(device=spelling).manual_seed(5))
    expected = torch.multinomial(
        torch.softmax(logits / 0.7, -1), 1, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(got, expected)


def test_generate_is_the_same_for_every_spelling_of_the_cpu_generator():
    model = _tiny_gpt()
    idx = torch.zeros(2, 3, dtype=torch.long)
    outs = [
        model.generate(idx, 12, generator=torch.Generator(device=spelling).manual_seed(1))
        for spelling in (torch.device("cpu"), "cpu", "cpu:0")
    ]
    assert outs[0].shape == (2, 15)
    assert all(torch.equal(outs[0], other) for other in outs[1:])
    different = model.generate(idx, 12, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(outs[0], different)  # the generator, not chance, decides


def test_generate_rejects_a_generator_that_is_not_one():
    with pytest.raises(TypeError, match="generator"):
        _tiny_gpt().generate(torch.zeros(1, 2, dtype=torch.long), 3, generator=1)


def test_bf16_autocast_on_the_cpu_keeps_the_attention_in_float32(monkeypatch):
    fmbook.seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=32))
    idx = torch.randint(0, 20, (4, 16))
    exact, _ = model(idx)
    fused, dtypes = torch.nn.functional.scaled_dot_product_attention, []

    def spy(q, k, v, **kw):
        dtypes.append(q.dtype)
        return fused(q, k, v, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, loss = model(idx, idx)
    loss.backward()  # the float32 attention has a backward pass under autocast too
    assert dtypes == [torch.float32, torch.float32]  # one call per layer, both in float32
    assert low.dtype == torch.bfloat16  # the matrix products around it ran in bf16
    assert all(p.grad is not None for p in model.parameters())
    torch.testing.assert_close(low.float(), exact, atol=0.1, rtol=0.05)
