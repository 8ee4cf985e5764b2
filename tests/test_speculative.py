import itertools
import math

import pytest
import torch

from fmbook import speculative as S
from fmbook import zoo
from fmbook.transformer import GPT, GPTConfig, KVCache


def tiny_gpt(n_layer=2, n_embd=8, vocab=5, seed=0, scale=0.5, block=24) -> GPT:
    torch.manual_seed(seed)
    model = GPT(
        GPTConfig(vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=2, n_embd=n_embd)
    )
    # an output layer of its own, with large weights: peaked next-token distributions that
    # differ from model to model
    model.lm_head.weight = torch.nn.Parameter(scale * torch.randn(vocab, n_embd))
    return model.eval()


def random_tables(vocab, seed, concentration=0.5):
    """Next-token distributions that depend on the whole context: a Dirichlet draw per context."""
    g = torch.Generator().manual_seed(seed)
    cache = {}

    def table(ctx):
        if ctx not in cache:
            alpha = torch.full((vocab,), concentration, dtype=torch.float64)
            cache[ctx] = torch.distributions.Dirichlet(alpha).sample()  # uses the global RNG
        return cache[ctx]

    torch.manual_seed(int(torch.randint(2**31, (1,), generator=g)))
    return table


def model_table(model, context, length):
    """p(. | ctx) for every ctx that extends ``context`` by up to ``length`` tokens, in float64."""
    V = model.config.vocab_size
    rest = torch.tensor(list(itertools.product(range(V), repeat=length)))
    seqs = torch.cat([torch.tensor(context).repeat(len(rest), 1), rest], dim=1)
    with torch.no_grad():
        probs = torch.softmax(model(seqs)[0].double(), -1)
    out = {}
    for seq, row in zip(seqs.tolist(), probs):
        for i in range(len(context) - 1, seq.__len__()):
            out[tuple(seq[: i + 1])] = row[i]
    return out.__getitem__


# -- the cache --------------------------------------------------------------------------------


def test_crop_cache_keeps_a_prefix_that_continues_like_a_fresh_cache():
    model = tiny_gpt()
    idx = torch.randint(5, (2, 12))
    cache = KVCache(model.config.n_layer)
    with torch.no_grad():
        model(idx[:, :10], cache=cache)
        assert S.crop_cache(cache, 6) is cache and cache.length == 6
        for k, v in cache.layers:
            assert k.shape[-2] == v.shape[-2] == 6
        cropped, _ = model(idx[:, 6:12], cache=cache)
        fresh, _ = model(idx[:, :12])
    torch.testing.assert_close(cropped, fresh[:, 6:])


def test_crop_cache_by_hand_and_bad_inputs():
    cache = KVCache(1)
    keys = torch.arange(8.0).view(1, 1, 4, 2)
    cache.update(0, keys, -keys)
    S.crop_cache(cache, 1)
    torch.testing.assert_close(cache.layers[0][0], torch.tensor([[[[0.0, 1.0]]]]))
    torch.testing.assert_close(cache.layers[0][1], torch.tensor([[[[0.0, -1.0]]]]))
    assert S.crop_cache(KVCache(2), 0).length == 0  # an empty cache stays empty
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        S.crop_cache(cache, 2)
    with pytest.raises(ValueError, match="length"):
        S.crop_cache(cache, -1)
    with pytest.raises(TypeError, match="KVCache"):
        S.crop_cache([], 0)


# -- the rule ---------------------------------------------------------------------------------


def test_residual_by_hand():
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.5, 0.3])
    torch.testing.assert_close(S.residual(p, q), torch.tensor([1.0, 0.0, 0.0]))
    p2, q2 = torch.tensor([0.4, 0.4, 0.2]), torch.tensor([0.2, 0.3, 0.5])
    torch.testing.assert_close(S.residual(p2, q2), torch.tensor([2 / 3, 1 / 3, 0.0]))
    torch.testing.assert_close(S.residual(p, p), p)  # nothing to replace: rejection impossible
    batch = S.residual(torch.stack([p, p2]), torch.stack([q, q2]))
    torch.testing.assert_close(batch[1], S.residual(p2, q2))
    with pytest.raises(ValueError, match="same shape"):
        S.residual(p, q[:2])


def test_probabilities_is_the_softmax_at_a_temperature():
    z = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(S.probabilities(z, 0.5), torch.softmax(2 * z, -1))
    with pytest.raises(ValueError, match="temperature"):
        S.probabilities(z, 0.0)


def test_accept_reject_accepts_everything_when_draft_equals_target():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, 4, 5, generator=g), -1)
    drafts = torch.randint(5, (6, 3), generator=g)
    n, t = S.accept_reject(p, p[:, :3], drafts, g)
    assert n.tolist() == [3] * 6 and t.shape == (6,) and t.dtype == torch.long


def test_accept_reject_rejects_a_token_the_target_never_emits():
    p = torch.tensor([[[0.0, 1.0], [0.5, 0.5]]])
    q = torch.tensor([[[1.0, 0.0]]])
    for seed in range(5):
        n, t = S.accept_reject(p, q, torch.tensor([[0]]), torch.Generator().manual_seed(seed))
        assert n.item() == 0 and t.item() == 1  # the residual puts all its mass on token 1


def test_accept_reject_first_token_follows_the_target_monte_carlo():
    """200 000 independent rounds at once: the first emitted token is distributed as p_1."""
    g = torch.Generator().manual_seed(3)
    B, k, V = 200_000, 2, 4
    p = torch.softmax(2 * torch.randn(1, k + 1, V, generator=g), -1).expand(B, -1, -1)
    q = torch.softmax(2 * torch.randn(1, k, V, generator=g), -1).expand(B, -1, -1)
    drafts = torch.stack([torch.multinomial(q[0, i], B, True, generator=g) for i in range(k)], 1)
    n, t = S.accept_reject(p, q, drafts, g)
    first = torch.where(n > 0, drafts[:, 0], t)
    _, _, p_value = S.chi_square(torch.bincount(first, minlength=V), p[0, 0])
    assert p_value > 1e-6
    # the acceptance rate of the first draft token is sum_x min(p, q) (Leviathan et al. Thm 3.5)
    beta = torch.minimum(p[0, 0], q[0, 0]).sum()
    assert abs((n > 0).float().mean() - beta) < 5 * math.sqrt(beta * (1 - beta) / B)


def test_accept_reject_checks_shapes():
    p, q, d = torch.rand(1, 3, 5), torch.rand(1, 2, 5), torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="expected p"):
        S.accept_reject(p[0], q, d)
    with pytest.raises(ValueError, match="k=2"):
        S.accept_reject(p[:, :2], q, d)
    with pytest.raises(TypeError, match="long"):
        S.accept_reject(p, q, d.float())


# -- exactness, by enumerating every path -----------------------------------------------------


@pytest.mark.parametrize("k, m, seed", [(1, 1, 0), (1, 3, 1), (2, 2, 2), (2, 3, 3), (3, 2, 4)])
def test_emitted_distribution_is_the_targets_for_random_tables(k, m, seed):
    target, draft = random_tables(3, seed), random_tables(3, seed + 100)
    emitted = S.emitted_distribution(target, draft, k, m, context=(0,))
    exact = S.sequence_distribution(target, m, context=(0,))
    assert emitted.shape == (3,) * m
    torch.testing.assert_close(emitted, exact, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_emitted_distribution_is_the_targets_for_tiny_gpts(k):
    target, draft = tiny_gpt(2, seed=1, vocab=4), tiny_gpt(1, seed=2, vocab=4)
    context, m = (1, 3), 2
    p = model_table(target, context, k + m)
    q = model_table(draft, context, k + m)
    assert torch.minimum(p(context), q(context)).sum() < 0.95  # the draft really differs
    emitted = S.emitted_distribution(p, q, k, m, context)
    torch.testing.assert_close(emitted, S.sequence_distribution(p, m, context), rtol=0, atol=1e-12)


def test_sequence_distribution_by_hand():
    def target(ctx):  # a Markov chain on two tokens
        return torch.tensor([0.9, 0.1]) if ctx[-1] == 0 else torch.tensor([0.3, 0.7])

    joint = S.sequence_distribution(target, 2, context=(0,))
    torch.testing.assert_close(
        joint, torch.tensor([[0.81, 0.09], [0.03, 0.07]], dtype=torch.float64)
    )


def test_emitted_distribution_checks_its_inputs():
    def uniform(ctx):
        return torch.full((3,), 1 / 3)

    with pytest.raises(ValueError, match="k must"):
        S.emitted_distribution(uniform, uniform, 0, 1)
    with pytest.raises(ValueError, match="m must"):
        S.emitted_distribution(uniform, uniform, 1, 0)
    with pytest.raises(ValueError, match="distribution"):
        S.emitted_distribution(lambda ctx: torch.tensor([0.5, 0.6]), uniform, 1, 1)
    with pytest.raises(ValueError, match="vector of 3"):
        S.emitted_distribution(uniform, lambda ctx: torch.tensor([0.5, 0.5]), 1, 1)


# -- the formulas -----------------------------------------------------------------------------


def test_expected_tokens_and_speedup_by_hand():
    assert S.expected_tokens(0.0, 4) == 1.0
    assert S.expected_tokens(1.0, 4) == 5.0
    assert S.expected_tokens(0.5, 2) == pytest.approx(1.75)
    assert S.expected_tokens(0.8, 3) == pytest.approx((1 - 0.8**4) / 0.2)
    torch.testing.assert_close(
        S.expected_tokens(torch.tensor([0.0, 0.5]), 1),
        torch.tensor([1.0, 1.5], dtype=torch.float64),
    )
    assert S.expected_speedup(0.5, 2, 0.25) == pytest.approx(1.75 / 1.5)
    assert S.expected_speedup(0.9, 4, 0.0) == pytest.approx(S.expected_tokens(0.9, 4))
    with pytest.raises(ValueError, match="alpha"):
        S.expected_tokens(1.5, 2)
    with pytest.raises(ValueError, match="k must"):
        S.expected_tokens(0.5, -1)
    with pytest.raises(ValueError, match="c must"):
        S.expected_speedup(0.5, 2, -0.1)


def test_rounds_count_by_hand():
    rounds = S.Rounds(k=2, accepted=[2, 0, 1])
    assert rounds.passes == 3
    assert rounds.examined == 2 + 1 + 2  # all-accepted rounds examine k, others n + 1
    assert rounds.acceptance_rate == pytest.approx(3 / 5)
    assert rounds.tokens_per_pass == pytest.approx(2.0)
    pooled = S.Rounds.pool([rounds, S.Rounds(2, [1])])
    assert pooled.accepted == [2, 0, 1, 1]
    with pytest.raises(ValueError, match="same k"):
        S.Rounds.pool([rounds, S.Rounds(3, [1])])


# -- generation -------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
def test_generate_with_and_without_caches_gives_the_same_tokens(k):
    target, draft = tiny_gpt(2, seed=1), tiny_gpt(1, seed=2)
    prompt = torch.tensor([[1, 2, 3]])
    outs = []
    for use_cache in (True, False):
        g = torch.Generator().manual_seed(5)
        outs.append(S.generate(target, draft, prompt, 15, k, generator=g, use_cache=use_cache))
    (a, rounds_a), (b, rounds_b) = outs
    assert a.shape == (1, 18) and torch.equal(a[:, :3], prompt)
    assert torch.equal(a, b) and rounds_a.accepted == rounds_b.accepted
    assert all(0 <= n <= k for n in rounds_a.accepted)
    assert sum(n + 1 for n in rounds_a.accepted) >= 15  # the last round may be cut


def test_generate_with_the_target_as_its_own_draft_accepts_everything():
    target = tiny_gpt(2, seed=1)
    out, rounds = S.generate(target, target, torch.tensor([[0]]), 12, 3)
    assert rounds.acceptance_rate == 1.0 and rounds.passes == 3
    assert not target.training


def test_generate_with_a_bigram_draft():
    target, draft = tiny_gpt(2, seed=1), S.Bigram(5)
    out, rounds = S.generate(target, draft, torch.tensor([[0, 1]]), 10, 2)
    assert out.shape == (1, 12) and rounds.passes >= 4


def test_generate_first_two_tokens_follow_the_target():
    """Many short generations against the exact distribution of the first two tokens."""
    target, draft = tiny_gpt(2, seed=1, vocab=3), tiny_gpt(1, seed=2, vocab=3)
    prompt = (2, 0)
    p = model_table(target, prompt, 2)
    joint = S.sequence_distribution(p, 2, prompt)
    counts = torch.zeros(3, 3)
    g = torch.Generator().manual_seed(0)
    for _ in range(800):
        out, _ = S.generate(target, draft, torch.tensor([prompt]), 2, 1, generator=g)
        counts[out[0, 2], out[0, 3]] += 1
    assert S.chi_square(counts, joint)[2] > 1e-6

    # a rule that accepts every draft token emits the draft's tokens instead, and is caught
    def accept_everything(p, q, drafts, generator=None):
        n = torch.full((1,), drafts.shape[1])
        return n, torch.multinomial(p[:, -1], 1, generator=generator)[:, 0]

    counts.zero_()
    for _ in range(300):
        out, _ = S.generate(
            target, draft, torch.tensor([prompt]), 2, 1, generator=g, rule=accept_everything
        )
        counts[out[0, 2], out[0, 3]] += 1
    assert S.chi_square(counts, joint)[2] < 1e-6


def test_generate_checks_its_inputs():
    target, draft = tiny_gpt(), tiny_gpt(1)
    prompt = torch.tensor([[1, 2]])
    with pytest.raises(TypeError, match="target"):
        S.generate(S.Bigram(5), draft, prompt, 3, 2)
    with pytest.raises(ValueError, match=r"\(1, T >= 1\)"):
        S.generate(target, draft, prompt.repeat(2, 1), 3, 2)
    with pytest.raises(ValueError, match="k must"):
        S.generate(target, draft, prompt, 3, 0)
    with pytest.raises(ValueError, match="block_size=24"):
        S.generate(target, draft, prompt, 20, 4)
    with pytest.raises(ValueError, match="temperature"):
        S.generate(target, draft, prompt, 3, 2, temperature=0)
    with pytest.raises(TypeError, match="rule"):
        S.generate(target, draft, prompt, 3, 2, rule=None)
    out, rounds = S.generate(target, draft, prompt, 0, 2)
    assert torch.equal(out, prompt) and rounds.passes == 0


# -- the test statistic -----------------------------------------------------------------------


def test_chi_square_by_hand():
    statistic, df, p_value = S.chi_square(torch.tensor([10, 20, 30]), torch.tensor([1, 2, 3]) / 6)
    assert statistic == pytest.approx(0.0) and df == 2 and p_value == pytest.approx(1.0)
    # (40 - 30)^2 / 30 + (20 - 30)^2 / 30, one degree of freedom: P(X > x) = erfc(sqrt(x / 2))
    statistic, df, p_value = S.chi_square(torch.tensor([40, 20]), torch.tensor([0.5, 0.5]))
    assert statistic == pytest.approx(20 / 3) and df == 1
    assert p_value == pytest.approx(math.erfc(math.sqrt(10 / 3)))


def test_chi_square_pools_the_cells_expected_below_five():
    probs = torch.tensor([0.5, 0.46, 0.02, 0.02])  # N = 100: the last two expect 2 each
    statistic, df, _ = S.chi_square(torch.tensor([50, 46, 1, 3]), probs)
    assert df == 2 and statistic == pytest.approx(0.0)
    assert S.chi_square(torch.tensor([50, 49, 1, 0]), torch.tensor([0.5, 0.5, 0, 0]))[2] == 0.0
    with pytest.raises(ValueError, match="same number"):
        S.chi_square(torch.tensor([1, 2]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="distribution"):
        S.chi_square(torch.tensor([1, 2]), torch.tensor([0.5, 0.6]))


# -- the drafts -------------------------------------------------------------------------------


def test_bigram_looks_at_the_last_token_only():
    model = S.Bigram(4)
    with torch.no_grad():
        model.table.weight.copy_(torch.arange(16.0).view(4, 4))
    logits, loss = model(torch.tensor([[3, 1]]), torch.tensor([[1, 2]]))
    torch.testing.assert_close(logits[0, 1], torch.tensor([4.0, 5.0, 6.0, 7.0]))
    assert loss > 0
    with pytest.raises(ValueError, match="long"):
        model(torch.tensor([[1.0]]))
    with pytest.raises(ValueError, match="vocab_size"):
        S.Bigram(0)


@pytest.mark.parametrize("budget", ["test", "full"])
def test_draft_recipes_are_smaller_than_the_target(budget):
    from fmbook.lm import gpt_config

    target = gpt_config(budget)
    for size in ("tiny", "small"):
        config = S.draft_config(size, budget)
        assert isinstance(S.build_draft(config), GPT)
        assert config["n_layer"] * config["n_embd"] ** 2 < target["n_layer"] * target["n_embd"] ** 2
        assert config["vocab_size"] == target["vocab_size"]
    assert isinstance(S.build_draft(S.draft_config("bigram", budget)), S.Bigram)
    assert {"draft-bigram", "draft-tiny", "draft-small"} <= set(zoo.available())
    with pytest.raises(ValueError, match="size must"):
        S.draft_config("huge", budget)


def test_timers_return_the_result_and_positive_seconds():
    out, seconds = S.wall_time(lambda: 3, "cpu")
    assert out == 3 and seconds >= 0
    idx = torch.randint(5, (1, 6))
    assert S.forward_seconds(tiny_gpt(), idx, new=2, repeats=2) > 0
    assert S.forward_seconds(S.Bigram(5), idx, repeats=1) > 0
    with pytest.raises(ValueError, match="new"):
        S.forward_seconds(tiny_gpt(), idx, new=6)
