import numpy as np
import pytest
import torch

from fmbook import serve, transformer
from fmbook.transformer import GPT, GPTConfig, KVCache


def tiny_gpt(n_layer: int = 2, n_embd: int = 8) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=7, block_size=16, n_layer=n_layer, n_head=2, n_embd=n_embd)
    return GPT(config).eval()


@pytest.mark.parametrize("n_layer, n_embd, batch, context", [(1, 8, 1, 5), (2, 16, 3, 9)])
def test_kv_cache_bytes_is_the_measured_size_of_a_filled_cache(n_layer, n_embd, batch, context):
    model = tiny_gpt(n_layer, n_embd)
    cache = serve.fill_cache(model, torch.randint(7, (batch, context)))
    assert cache.length == context
    assert serve.cache_nbytes(cache) == serve.kv_cache_bytes(n_layer, n_embd, context, batch, 4)


DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def tokens_one_at_a_time(model, idx):
    """A cache filled as generation fills it after a one-token prompt: one position per pass."""
    cache = KVCache(model.config.n_layer)
    with torch.no_grad():
        for t in range(idx.shape[1]):
            model(idx[:, t : t + 1], cache=cache)
    return cache


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fill", ["one pass", "token by token"])
def test_the_memory_behind_a_filled_cache_is_the_formula(dtype, fill):
    """No view into the fused query/key/value output survives in the cache: the storages it keeps
    alive hold exactly 2 L d b T B bytes."""
    model = tiny_gpt(2, 16).to(dtype)
    idx = torch.randint(7, (3, 9))
    cache = serve.fill_cache(model, idx) if fill == "one pass" else tokens_one_at_a_time(model, idx)
    want = serve.kv_cache_bytes(2, 16, 9, 3, torch.finfo(dtype).bits // 8)
    assert serve.cache_nbytes(cache) == want
    assert serve.cache_storage_bytes(cache) == want


@pytest.mark.parametrize("prompt", [1, 6])
def test_the_cache_generate_builds_holds_the_formula_after_its_prompt_and_each_step(
    prompt, monkeypatch
):
    made = []

    class Watched(KVCache):  # every cache generate makes, kept for a look
        def __init__(self, n_layer):
            super().__init__(n_layer)
            made.append(self)

    monkeypatch.setattr(transformer, "KVCache", Watched)
    model = tiny_gpt(2, 16)
    steps = model.stream(
        torch.randint(7, (2, prompt)), 4, generator=torch.Generator().manual_seed(0)
    )
    for step in range(4):
        next(steps)
        (cache,) = made
        want = serve.kv_cache_bytes(2, 16, prompt + step, 2, 4)  # the newest token is not read yet
        assert serve.cache_storage_bytes(cache) == serve.cache_nbytes(cache) == want


def test_a_view_into_a_larger_tensor_counts_all_of_its_storage():
    qkv = torch.zeros(1, 2, 5, 12)
    cache = KVCache(1)
    cache.layers = [(qkv[..., :4], qkv[..., 4:8])]  # what the cache kept before it copied
    assert serve.cache_nbytes(cache) == 2 * 2 * 5 * 4 * 4
    assert serve.cache_storage_bytes(cache) == qkv.nbytes  # 1.5 times as much
    with pytest.raises(TypeError, match="KVCache"):
        serve.cache_storage_bytes([])


def test_kv_cache_bytes_by_hand_and_its_checks():
    assert serve.kv_cache_bytes(3, 128, 64, 2, 4) == 2 * 3 * 128 * 4 * 64 * 2
    assert serve.kv_cache_bytes(3, 128, 0) == 0
    assert serve.cache_nbytes(KVCache(2)) == 0
    with pytest.raises(ValueError, match="n_layer"):
        serve.kv_cache_bytes(0, 128, 64)
    with pytest.raises(ValueError, match="context"):
        serve.kv_cache_bytes(3, 128, -1)
    with pytest.raises(TypeError, match="KVCache"):
        serve.cache_nbytes([])


def test_the_cached_next_token_equals_the_recomputed_one():
    model = tiny_gpt()
    idx = torch.randint(7, (2, 10))
    cache = serve.fill_cache(model, idx[:, :-1])
    with torch.no_grad():
        cached, _ = model(idx[:, -1:], cache=cache)
        full, _ = model(idx)
    torch.testing.assert_close(cached[:, -1], full[:, -1])


def test_seconds_per_token_measures_both_ways_and_checks_inputs():
    model = tiny_gpt()
    idx = torch.randint(7, (1, 12))
    for use_cache in (False, True):
        assert serve.seconds_per_token(model, idx, use_cache=use_cache, repeats=2) > 0
    with pytest.raises(ValueError, match="T >= 2"):
        serve.seconds_per_token(model, idx[:, :1], use_cache=True)


def test_poisson_arrivals_have_the_asked_rate_and_are_reproducible():
    a = serve.poisson_arrivals(rate=4.0, n=20000, seed=1)
    assert np.all(np.diff(a) > 0)
    assert abs(len(a) / a[-1] - 4.0) < 0.1
    np.testing.assert_array_equal(a, serve.poisson_arrivals(4.0, 20000, seed=1))
    with pytest.raises(ValueError, match="rate"):
        serve.poisson_arrivals(0.0, 5)


ARRIVALS, TOKENS = [0.0, 0.1, 0.2, 5.0], [2, 1, 3, 1]


def step_seconds(b):  # one step: 1 s alone, 0.5 s more for every further request in the batch
    return 0.5 + 0.5 * b


def test_simulate_static_by_hand():
    one_at_a_time = serve.simulate_static(ARRIVALS, TOKENS, step_seconds, max_batch=1)
    np.testing.assert_allclose(one_at_a_time, [2.0, 2.9, 5.8, 2.0])
    # the first request alone (nothing else waits at 0), then the next two together in steps of
    # 1.5 s until the longer is done at 6.5; the last waits for that
    batched = serve.simulate_static(ARRIVALS, TOKENS, step_seconds, max_batch=8)
    np.testing.assert_allclose(batched, [2.0, 3.4, 6.3, 2.5])


def test_simulate_continuous_by_hand():
    # 0-1: the first alone; 1-3: all three (2 s); 3-5: the third alone; 5-6: the last
    batched = serve.simulate_continuous(ARRIVALS, TOKENS, step_seconds, max_batch=8)
    np.testing.assert_allclose(batched, [3.0, 2.9, 4.8, 1.0])
    one = serve.simulate_continuous(ARRIVALS, TOKENS, step_seconds, max_batch=1)
    np.testing.assert_allclose(one, serve.simulate_static(ARRIVALS, TOKENS, step_seconds, 1))


@pytest.mark.parametrize("simulate", [serve.simulate_static, serve.simulate_continuous])
def test_simulations_check_their_inputs(simulate):
    with pytest.raises(ValueError, match="sorted"):
        simulate([1.0, 0.0], [1, 1], step_seconds, 1)
    with pytest.raises(ValueError, match="one int per request"):
        simulate([0.0, 1.0], [1], step_seconds, 1)
    with pytest.raises(ValueError, match="at least 1 token"):
        simulate([0.0], [0], step_seconds, 1)
    with pytest.raises(ValueError, match="max_batch"):
        simulate([0.0], [1], step_seconds, 0)
    with pytest.raises(ValueError, match="must be > 0"):
        simulate([0.0], [1], lambda b: 0.0, 1)


@pytest.mark.parametrize("new, cached, batch", [(5, 0, 1), (1, 9, 3), (4, 6, 2)])
def test_forward_flops_is_what_pytorchs_flop_counter_counts(new, cached, batch):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model = tiny_gpt(n_layer=2, n_embd=16)
    idx = torch.randint(7, (batch, cached + new))
    cache = serve.fill_cache(model, idx[:, :cached]) if cached else None
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:  # attention as counted products
        model(idx[:, cached:], cache=cache)
    assert counter.get_total_flops() == serve.forward_flops(model.config, new, cached, batch)
