import copy
import itertools
import json
import math

import pytest
import torch

from fmbook import adapt, align
from fmbook.align import (
    RewardModel,
    bradley_terry_loss,
    dpo_loss,
    kl_per_token,
    response_log_probs,
    sequence_log_prob,
    sft_example,
    sft_loss,
    sft_tensors,
)
from fmbook.objectives import IGNORE_INDEX
from fmbook.transformer import GPT, GPTConfig


def tiny_gpt(seed: int, vocab: int = 5, block: int = 8, scale: float | None = None) -> GPT:
    """A one-layer GPT; with ``scale``, weights drawn with that spread (far from uniform)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=1, n_head=2, n_embd=8))
    if scale is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, scale)
    return model.eval()


# -- instruction tuning: the loss sees the response only ---------------------------------------


def test_sft_example_targets_the_response_and_nothing_else():
    x, y = sft_example([1, 2, 3], [4, 0], block_size=6, pad_id=0)
    # inputs: prompt + response without its last token, then padding
    assert x.tolist() == [1, 2, 3, 4, 0, 0]
    # the token after position 2 (the prompt's last) is the response's first, and so on
    assert y.tolist() == [IGNORE_INDEX, IGNORE_INDEX, 4, 0, IGNORE_INDEX, IGNORE_INDEX]


def test_sft_example_checks_its_inputs():
    with pytest.raises(ValueError, match="non-empty"):
        sft_example([], [1], block_size=4)
    with pytest.raises(ValueError, match="block_size"):
        sft_example([1, 2, 3], [1, 2, 3], block_size=4)
    sft_example([1, 2], [1, 2, 3], block_size=4)  # 5 tokens: exactly block_size + 1 fit


def test_sft_loss_is_the_mean_over_response_tokens_and_ignores_the_prompt():
    torch.manual_seed(0)
    pairs = [([1, 2, 3], [4, 1]), ([2], [3, 3, 4])]
    x, y = map(torch.stack, zip(*(sft_example(p, r, block_size=6) for p, r in pairs)))
    logits = torch.randn(2, 6, 5, requires_grad=True)
    loss = sft_loss(logits, y)
    by_hand = [
        -torch.log_softmax(logits[b, t], -1)[y[b, t]]
        for b in range(2)
        for t in range(6)
        if y[b, t] != IGNORE_INDEX
    ]
    assert len(by_hand) == 5  # the five response tokens
    torch.testing.assert_close(loss, torch.stack(by_hand).mean())
    loss.backward()
    prompt = torch.tensor([[1, 1, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    assert torch.all(logits.grad[prompt] == 0), "no gradient reaches a prompt or padding position"
    assert torch.all(logits.grad[~prompt].abs().sum(-1) > 0)


def test_sft_loss_refuses_a_batch_without_responses():
    with pytest.raises(ValueError, match="no response"):
        sft_loss(torch.zeros(1, 3, 4), torch.full((1, 3), IGNORE_INDEX))


def test_sequence_log_prob_is_the_sum_of_the_responses_token_log_probs():
    model = tiny_gpt(0)
    prompt, response = [1, 2], [3, 4, 0]
    x, y = sft_example(prompt, response, block_size=8)
    got = sequence_log_prob(model, x[None], y[None])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor([prompt + response]))[0][0], -1)
    by_hand = sum(log_probs[len(prompt) - 1 + i, tok] for i, tok in enumerate(response))
    torch.testing.assert_close(got, by_hand[None], atol=1e-5, rtol=1e-5)
    per_token = response_log_probs(model(x[None])[0], y[None])
    assert torch.all(per_token[y[None] == IGNORE_INDEX] == 0)
    with pytest.raises(ValueError, match="expected logits"):
        response_log_probs(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))


# -- the reward model and the Bradley-Terry loss ------------------------------------------------


def test_reward_model_reads_the_last_real_token_and_never_the_padding():
    reward = RewardModel(tiny_gpt(1)).eval()
    idx = torch.tensor([[1, 2, 3, 0, 0], [1, 2, 3, 4, 4]])
    lengths = torch.tensor([3, 3])
    r = reward(idx, lengths)
    assert r.shape == (2,)
    torch.testing.assert_close(r[0], r[1])  # only the padding differs
    assert not torch.allclose(reward(idx, torch.tensor([3, 5]))[1], r[1])
    with pytest.raises(ValueError, match="lengths"):
        reward(idx, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="lengths"):
        reward(idx, torch.tensor([3, 6]))


def test_bradley_terry_loss_by_hand_and_its_gradient_direction():
    chosen = torch.tensor([2.0, 0.0], requires_grad=True)
    rejected = torch.tensor([1.0, 0.0], requires_grad=True)
    loss = bradley_terry_loss(chosen, rejected)
    by_hand = (math.log(1 + math.exp(-1.0)) + math.log(2.0)) / 2
    assert loss.item() == pytest.approx(by_hand)
    loss.backward()
    assert torch.all(chosen.grad < 0) and torch.all(rejected.grad > 0)  # pushes r_w up, r_l down
    torch.testing.assert_close(chosen.grad, -rejected.grad)
    with pytest.raises(ValueError, match="same shape"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(3))


# -- DPO ------------------------------------------------------------------------------------------


def test_dpo_loss_by_hand():
    pc, pr = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    rc, rr = torch.tensor([-3.5, -4.0]), torch.tensor([-3.0, -3.0])
    beta = 0.5
    margins = [(-3.0 + 3.5) - (-4.0 + 3.0), (-5.0 + 4.0) - (-2.0 + 3.0)]  # 1.5 and -2.0
    by_hand = sum(math.log(1 + math.exp(-beta * m)) for m in margins) / 2
    assert dpo_loss(pc, pr, rc, rr, beta).item() == pytest.approx(by_hand)


def test_dpo_loss_is_log_2_at_the_reference_and_bradley_terry_on_the_implicit_reward():
    torch.manual_seed(0)
    ref_c, ref_r = torch.randn(4), torch.randn(4)
    torch.testing.assert_close(dpo_loss(ref_c, ref_r, ref_c, ref_r, 0.1), torch.tensor(math.log(2)))
    pc, pr, beta = torch.randn(4), torch.randn(4), 0.3
    implicit = beta * (pc - ref_c), beta * (pr - ref_r)  # r = beta log pi / pi_ref
    torch.testing.assert_close(dpo_loss(pc, pr, ref_c, ref_r, beta), bradley_terry_loss(*implicit))


def test_dpo_gradient_raises_the_chosen_and_lowers_the_rejected():
    pc = torch.tensor([-3.0], requires_grad=True)
    pr = torch.tensor([-3.0], requires_grad=True)
    ref = torch.tensor([-3.0])
    dpo_loss(pc, pr, ref, ref, beta=0.1).backward()
    # at the reference sigma(0) = 1/2, so d loss / d log pi(y_w) = -beta / 2 (the gradient that
    # Rafailov et al. discuss in "What does the DPO update do?")
    assert pc.grad.item() == pytest.approx(-0.05)
    assert pr.grad.item() == pytest.approx(0.05)


def test_dpo_loss_checks_its_inputs():
    z = torch.zeros(3)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(z, z, z, z, beta=0.0)
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(z, z, z, torch.zeros(2), beta=0.1)


# -- the KL penalty: exact on a tiny vocabulary ---------------------------------------------------


def test_kl_per_token_averages_to_the_exact_sequence_kl():
    vocab, prompt, n = 3, [1], 3  # every response of 3 tokens: 27 of them
    policy, reference = tiny_gpt(2, vocab=vocab, scale=0.5), tiny_gpt(3, vocab=vocab, scale=0.5)
    responses = [list(r) for r in itertools.product(range(vocab), repeat=n)]
    x, y = map(torch.stack, zip(*(sft_example(prompt, r, block_size=n) for r in responses)))
    with torch.no_grad():
        logits_p, logits_q = policy(x)[0], reference(x)[0]
        log_p = response_log_probs(logits_p, y).sum(1)
        log_q = response_log_probs(logits_q, y).sum(1)
        per_sequence = kl_per_token(logits_p, logits_q, y)
    p = log_p.exp()
    torch.testing.assert_close(p.sum(), torch.tensor(1.0))  # a distribution over the 27
    exact = (p * (log_p - log_q)).sum()  # KL(pi || pi_ref) by definition
    assert exact > 0.05  # two clearly different models
    torch.testing.assert_close((p * per_sequence).sum(), exact)  # unbiased: chain rule
    assert torch.all(per_sequence >= 0)
    # and a Monte Carlo estimate from samples of the policy lands on it
    g = torch.Generator().manual_seed(0)
    draws = torch.multinomial(p, 20_000, replacement=True, generator=g)
    estimate = per_sequence[draws].mean()
    assert abs(estimate - exact) < 4 * per_sequence[draws].std() / math.sqrt(20_000)


def test_kl_per_token_is_zero_for_the_same_model_and_checks_shapes():
    model = tiny_gpt(4)
    x, y = sft_example([1, 2], [3, 4], block_size=8)
    with torch.no_grad():
        logits = model(x[None])[0]
    torch.testing.assert_close(kl_per_token(logits, logits, y[None]), torch.zeros(1))
    with pytest.raises(ValueError, match="one shape"):
        kl_per_token(logits, logits[..., :3], y[None])


# -- instruction tuning end to end: tensors, training, replies, the sweep's choice ------------

ALPHABET = "\nab:"  # a tiny character vocabulary: newline, two letters, a colon


def encode(text):
    return [ALPHABET.index(c) for c in text]


def decode(ids):
    return "".join(ALPHABET[i] for i in ids)


def test_sft_tensors_stack_sft_examples():
    pairs = [("a:", "ab\n"), ("b:", "b\n")]
    inputs, targets = sft_tensors(pairs, encode, block_size=6, pad_id=0)
    for row, (p, r) in enumerate(pairs):
        x, y = sft_example(encode(p), encode(r), 6, 0)
        assert torch.equal(inputs[row], x) and torch.equal(targets[row], y)
    with pytest.raises(ValueError, match="no \\(prompt, response\\) pairs"):
        sft_tensors([], encode, block_size=6)


def test_train_sft_teaches_the_responses_and_is_deterministic():
    pairs = [("a:", "ba\n"), ("b:", "ab\n")]
    inputs, targets = sft_tensors(pairs, encode, block_size=6, pad_id=0)
    runs = []
    for _ in range(2):
        model = tiny_gpt(0, vocab=len(ALPHABET)).train()
        history = align.train_sft(model, inputs, targets, steps=150, lr=0.1, batch_size=4)
        runs.append((model, history))
    (model, history), (_, again) = runs
    assert history.train_loss == again.train_loss  # same seed, same batches, same losses
    assert history.train_loss[-1] < 0.1 * history.train_loss[0]
    replies = align.respond(model, [p for p, _ in pairs], encode, decode, max_new_tokens=4)
    assert replies == ["ba", "ab"]  # what it was taught, cut at the newline


def test_used_length_is_one_past_the_last_used_column():
    used = torch.tensor([[True, True, False, False, False], [False, True, True, False, False]])
    assert align.used_length(used) == 3
    assert align.used_length(torch.zeros(2, 4, dtype=torch.bool)) == 1


def test_cutting_the_padding_changes_neither_the_sft_loss_nor_its_gradient():
    inputs, targets = sft_tensors([("a:", "ba\n"), ("b:", "a\n")], encode, block_size=8, pad_id=0)
    t = align.used_length(targets != IGNORE_INDEX)
    assert t < inputs.shape[1]  # there is padding to cut
    losses, grads = [], []
    for x, y in ((inputs, targets), (inputs[:, :t], targets[:, :t])):
        model = tiny_gpt(0, vocab=len(ALPHABET), scale=0.5)
        loss = align.sft_loss(model(x)[0], y)
        loss.backward()
        losses.append(loss)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(grads[0], grads[1])


def test_rewards_of_a_batch_do_not_depend_on_its_padding():
    reward = RewardModel(tiny_gpt(1, block=8, scale=0.5)).eval()
    ids = torch.tensor([[1, 2, 3, 0, 0, 0, 0, 0], [1, 2, 0, 0, 0, 0, 0, 0]])
    lengths = torch.tensor([3, 2])
    with torch.no_grad():
        whole = reward(ids, lengths)
    torch.testing.assert_close(align.rewards(reward, ids, lengths), whole)


def test_train_sft_with_lora_changes_only_the_low_rank_factors():
    inputs, targets = sft_tensors([("a:", "ba\n")], encode, block_size=6, pad_id=0)
    model = tiny_gpt(0, vocab=len(ALPHABET)).train()
    adapt.add_lora(model, ["attn.qkv", "mlp.fc"], rank=2)
    before = copy.deepcopy(model.state_dict())
    align.train_sft(model, inputs, targets, steps=5, lr=1e-2, batch_size=2)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.endswith((".A", ".B")) for k in changed)


def test_train_sft_checks_shapes():
    inputs, targets = sft_tensors([("a:", "ba\n")], encode, block_size=6, pad_id=0)
    with pytest.raises(ValueError, match="one shape"):
        align.train_sft(tiny_gpt(0, vocab=4), inputs, targets[:, :3], steps=1, lr=1e-3)


def test_respond_is_greedy_decoding_cut_at_the_newline_whatever_the_batch():
    model = tiny_gpt(3, vocab=len(ALPHABET), block=16, scale=1.0)
    prompts = ["a:", "ab:", "b:", "ba:", "a:"]
    replies = align.respond(model, prompts, encode, decode, max_new_tokens=6, batch_size=2)
    for prompt, reply in zip(prompts, replies):
        ids = encode(prompt)
        for _ in range(6):  # greedy by hand: the most likely token, one at a time
            logits, _ = model(torch.tensor([ids]))
            ids.append(int(logits[0, -1].argmax()))
        assert reply == decode(ids[len(prompt) :]).split("\n")[0]
        assert align.respond(model, [prompt], encode, decode, 6) == [reply]  # alone, the same
    with pytest.raises(ValueError, match="non-empty list"):
        align.respond(model, "a:", encode, decode, 6)


def test_respond_samples_reproducibly_with_a_seed():
    model = tiny_gpt(3, vocab=len(ALPHABET), block=16, scale=0.3)
    prompts = ["a:"] * 20

    def sample(seed):
        return align.respond(model, prompts, encode, decode, 6, greedy=False, seed=seed)

    assert sample(0) == sample(0)
    assert sample(0) != sample(1)
    assert len(set(sample(0))) > 1  # twenty draws from one prompt are not all the same


def test_chosen_sft_takes_the_best_score_and_prefers_fewer_steps(tmp_path, monkeypatch):
    sweep = {
        "methods": {
            "full": {"0.001": {"250": 0.5, "500": 0.7}, "0.003": {"250": 0.7, "500": 0.6}},
            "lora": {"0.01": {"250": 0.2, "500": 0.4}},
        }
    }
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(sweep))
    monkeypatch.setattr(align, "SFT_SWEEP_FILE", path)
    assert align.chosen_sft("full") == {"lr": 0.003, "steps": 250, "score": 0.7}
    assert align.chosen_sft("lora") == {"lr": 0.01, "steps": 500, "score": 0.4}
    with pytest.raises(ValueError, match="unknown method"):
        align.chosen_sft("prompting")


def test_the_stored_sweep_covers_both_methods_on_one_grid():
    sweep = json.loads(align.SFT_SWEEP_FILE.read_text())
    full, lora = sweep["methods"]["full"], sweep["methods"]["lora"]
    assert set(full) == set(lora) == {f"{lr:g}" for lr in sweep["grid"]}  # the same care
    assert all(set(full[lr]) == set(lora[lr]) for lr in full)  # the same step counts
    for method in ("full", "lora"):
        choice = align.chosen_sft(method)
        best = max(v for by_steps in sweep["methods"][method].values() for v in by_steps.values())
        assert choice["score"] == best and 0 <= best <= 1


# -- preferences and the reward model -----------------------------------------------------------


def test_noisy_preferences_follow_the_bradley_terry_probabilities():
    n = 20000
    gold_a = torch.tensor([2.0, 1.0, 1.5]).repeat(n)
    gold_b = torch.tensor([1.0, 1.0, 2.0]).repeat(n)
    tau = 0.5
    a_wins = align.noisy_preferences(gold_a, gold_b, tau, torch.Generator().manual_seed(0))
    rates = a_wins.double().view(n, 3).mean(0)
    expected = torch.sigmoid(torch.tensor([2.0, 0.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(rates, expected, atol=0.015, rtol=0)  # 4 standard errors
    again = align.noisy_preferences(gold_a, gold_b, tau, torch.Generator().manual_seed(0))
    assert torch.equal(a_wins, again)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        align.noisy_preferences(gold_a, gold_b, 0.0, torch.Generator())
    with pytest.raises(ValueError, match="one shape"):
        align.noisy_preferences(gold_a, gold_b[:5], 1.0, torch.Generator())


def test_sequences_pad_and_measure():
    ids, lengths = align.sequences(["ab\n", "a"], encode, block_size=4, pad_id=0)
    assert ids.tolist() == [[1, 2, 0, 0], [1, 0, 0, 0]] and lengths.tolist() == [3, 1]
    with pytest.raises(ValueError, match="1 to 4 tokens"):
        align.sequences(["ab:ab"], encode, block_size=4)
    with pytest.raises(ValueError, match="at least one text"):
        align.sequences([], encode, block_size=4)


def test_pair_accuracy_counts_ties_as_half():
    assert align.pair_accuracy(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 1.0, 2.0])) == 0.5
    with pytest.raises(ValueError, match="non-empty"):
        align.pair_accuracy(torch.tensor([]), torch.tensor([]))


def test_reward_model_learns_a_preference_and_keeps_its_best_validation_weights():
    # chosen sequences end in "b", rejected ones in "a": a preference a reward model can learn,
    # and the opposite of what this untrained one happens to prefer
    torch.manual_seed(0)
    chosen = align.sequences(["ab:b", "b:b", "a:b", "ba:b"] * 4, encode, block_size=6)
    rejected = align.sequences(["ab:a", "b:a", "a:a", "ba:a"] * 4, encode, block_size=6)
    model = RewardModel(tiny_gpt(0, vocab=len(ALPHABET))).train()
    assert align.pair_accuracy(align.rewards(model, *chosen), align.rewards(model, *rejected)) == 0
    history = align.train_reward_model(
        model,
        chosen,
        rejected,
        steps=60,
        lr=1e-2,
        batch_size=8,
        val=(chosen, rejected),
        eval_every=10,
    )
    final = align.pair_accuracy(align.rewards(model, *chosen), align.rewards(model, *rejected))
    assert final == max(history.eval_loss) == 1.0  # the best measurement's weights are kept
    assert model.training  # rewards() gave the model back in the mode it found it
    with pytest.raises(ValueError, match="same number"):
        align.train_reward_model(
            model, chosen, (rejected[0][:3], rejected[1][:3]), steps=1, lr=1e-3
        )


def test_gpt_instruct_is_notebook_ones_full_finetuning(tmp_path, monkeypatch):
    from fmbook import lm, zoo
    from fmbook.data import instructions

    monkeypatch.setenv("FMBOOK_CACHE", str(tmp_path))
    monkeypatch.setenv("FMBOOK_BUDGET", "test")
    config = align.instruct_config()
    assert config["base"] == lm.gpt_config("test") and config["steps"] == 60
    assert config["lr"] == align.chosen_sft("full")["lr"]
    tuned = zoo.load("gpt-instruct", device="cpu", quiet=True)
    # by hand, as 1_instruction_tuning does it at the test budget
    model = copy.deepcopy(zoo.load("gpt-shakespeare", device="cpu", quiet=True))
    tokenizer = lm.char_data().tokenizer
    data = instructions.splits(300, 10, 20)
    inputs, targets = sft_tensors(
        [(e.prompt, e.response) for e in data.train], tokenizer.encode, 64, tokenizer.encode(" ")[0]
    )
    align.train_sft(model, inputs, targets, steps=60, lr=config["lr"], batch_size=32, seed=0)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(tuned.state_dict()[name], value)


def test_gpt_reward_is_notebook_twos_reward_model(tmp_path, monkeypatch):
    import numpy as np

    from fmbook import lm, zoo
    from fmbook.data import instructions as inst
    from fmbook.runtime import seed

    monkeypatch.setenv("FMBOOK_CACHE", str(tmp_path))
    monkeypatch.setenv("FMBOOK_BUDGET", "test")
    config = align.reward_config()
    assert config["steps"] == 30 and config["prompts"] == {"train": 50, "val": 100, "test": 100}
    trained = zoo.load("gpt-reward", device="cpu", quiet=True)
    # by hand, as 2_reward_model does it at the test budget (the test pairs are not needed)
    seed(0)
    policy = zoo.load("gpt-instruct", device="cpu", quiet=True)
    tokenizer, known = lm.char_data().tokenizer, inst.known_words()
    words = inst.splits(1, 1, 1).words
    order = np.random.default_rng(0).permutation(len(words))
    split = {"train": [words[i] for i in order[:60]], "val": [words[i] for i in order[60:80]]}
    assert split == {part: w for part, w in align.use_words().items() if part != "test"}
    k, n_prompts = {"train": 4, "val": 2}, {"train": 50, "val": 100}
    labelled = {}
    for seed_, part in enumerate(k, start=1):
        rng = np.random.default_rng(seed_)
        asked = [split[part][i] for i in rng.integers(len(split[part]), size=n_prompts[part])]
        prompts = [f"Use: {w}\n" for w in asked for _ in range(k[part])]
        replies = align.respond(
            policy, prompts, tokenizer.encode, tokenizer.decode, 41, greedy=False, seed=seed_
        )
        a, b, x, gold = [], [], [], {"a": [], "b": []}
        for p, w in enumerate(asked):
            for ra, rb in itertools.combinations(replies[p * k[part] : (p + 1) * k[part]], 2):
                a.append(ra), b.append(rb), x.append(f"Use: {w}\n")
                gold["a"].append(inst.gold_reward(w, ra, known))
                gold["b"].append(inst.gold_reward(w, rb, known))
        wins = align.noisy_preferences(
            torch.tensor(gold["a"]),
            torch.tensor(gold["b"]),
            0.5,
            torch.Generator().manual_seed(10 + seed_),
        )
        chosen = [p + (ra if w else rb) + "\n" for p, ra, rb, w in zip(x, a, b, wins)]
        rejected = [p + (rb if w else ra) + "\n" for p, ra, rb, w in zip(x, a, b, wins)]
        labelled[part] = [
            align.sequences(t, tokenizer.encode, 64, tokenizer.encode(" ")[0])
            for t in (chosen, rejected)
        ]
    model = RewardModel(copy.deepcopy(policy))
    align.train_reward_model(
        model,
        *labelled["train"],
        val=tuple(labelled["val"]),
        steps=30,
        lr=3e-4,
        batch_size=32,
        eval_every=10,
        seed=0,
    )
    for name, value in model.state_dict().items():
        torch.testing.assert_close(trained.state_dict()[name], value)


# -- optimising against a reward: best-of-n and REINFORCE with a KL penalty --------------------


def exact_best_of_n_kl(n: int, m: int) -> float:
    """KL(best-of-n || uniform) over m outcomes with distinct rewards, from the best-of-n law:
    the outcome of rank k (1 = worst) wins with probability (k/m)^n - ((k-1)/m)^n."""
    k = torch.arange(1, m + 1, dtype=torch.float64)
    p = (k / m) ** n - ((k - 1) / m) ** n
    p = p[p > 0]
    return float((p * torch.log(p * m)).sum())


def test_best_of_n_kl_bounds_the_exact_kl_and_is_close_when_no_outcome_is_likely():
    assert align.best_of_n_kl(1) == 0.0
    for n in (2, 4, 16):
        bound = align.best_of_n_kl(n)
        for m in (3, 10, 100):  # few outcomes: repeats among the n samples, a loose bound
            assert exact_best_of_n_kl(n, m) <= bound + 1e-12
        assert abs(exact_best_of_n_kl(n, 100_000) - bound) < 1e-3
    with pytest.raises(ValueError, match="positive int"):
        align.best_of_n_kl(0)


def test_best_of_n_picks_the_highest_score_of_each_group():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.2], [3.0, 1.0, 2.0, 4.0]])
    assert align.best_of_n(scores, 1).tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]
    assert align.best_of_n(scores, 2).tolist() == [[1, 2], [0, 3]]
    assert align.best_of_n(scores, 4).tolist() == [[1], [3]]
    with pytest.raises(ValueError, match="multiple of n"):
        align.best_of_n(scores, 3)


def test_reinforce_loss_by_hand_and_its_gradient():
    log_probs = torch.tensor([-1.0, -2.0, -3.0], requires_grad=True)
    reward, reference = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([-1.5, -2.0, -2.0])
    beta = 0.5
    penalised = reward - beta * (log_probs.detach() - reference)  # 0.75, 0, 2.5
    advantage = penalised - penalised.mean()
    loss = align.reinforce_loss(log_probs, reward, reference, beta)
    torch.testing.assert_close(loss, -(advantage * log_probs.detach()).mean())
    loss.backward()  # the penalised reward is a constant: d loss / d log pi_i = -A_i / B
    torch.testing.assert_close(log_probs.grad, -advantage / 3)
    # equal rewards: the reply that moved furthest from the reference is pushed back
    log_probs = torch.tensor([-1.0, -2.0], requires_grad=True)
    align.reinforce_loss(log_probs, torch.zeros(2), torch.tensor([-2.0, -2.0]), 1.0).backward()
    assert log_probs.grad[0] > 0 > log_probs.grad[1]  # descent lowers log pi of reply 0
    with pytest.raises(ValueError, match="beta"):
        align.reinforce_loss(log_probs, torch.zeros(2), torch.zeros(2), -1.0)
    with pytest.raises(ValueError, match="one shape"):
        align.reinforce_loss(log_probs, torch.zeros(3), torch.zeros(2), 0.1)


class CharTokenizer:
    alphabet = "\n ab:"

    def encode(self, text):
        return [self.alphabet.index(c) for c in text]

    def decode(self, ids):
        return "".join(self.alphabet[i] for i in ids)


class ShortIsBetter(torch.nn.Module):
    """A stand-in reward model: minus the length of the sequence, in tokens."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, ids, lengths):
        return -lengths.float() + 0 * self.unused


def test_train_rl_raises_the_reward_and_the_kl_penalty_keeps_the_policy_near():
    tokenizer, prompts = CharTokenizer(), ["a:", "b:"]
    reference = tiny_gpt(5, vocab=5, block=64)

    def tuned(beta):
        policy = copy.deepcopy(reference)
        align.train_rl(
            policy, reference, ShortIsBetter(), prompts, tokenizer,
            steps=25, lr=3e-2, beta=beta, batch_size=32, seed=0,
        )  # fmt: skip
        return policy.eval()

    def measure(policy):
        asked = prompts * 100
        replies = align.respond(
            policy, asked, tokenizer.encode, tokenizer.decode, 41, greedy=False, seed=1
        )
        kl = align.reply_kl(policy, reference, asked, replies, tokenizer).mean().item()
        return sum(map(len, replies)) / len(replies), kl

    length_before, _ = measure(reference)
    free, leashed = tuned(0.0), tuned(1.0)
    (length_free, kl_free), (length_leashed, kl_leashed) = measure(free), measure(leashed)
    assert length_free < 0.5 * length_before  # the reward asked for short replies
    assert length_free <= length_leashed < length_before  # the leashed policy learned it too
    assert kl_leashed < kl_free  # and the penalty kept it closer
    for name, value in tuned(0.0).state_dict().items():  # and the run is reproducible
        torch.testing.assert_close(free.state_dict()[name], value)


def test_train_dpo_prefers_the_chosen_replies_and_is_reproducible():
    tokenizer = CharTokenizer()
    prompts = ["a:", "b:"] * 8
    chosen = align.reply_tensors(prompts, ["ab", "ba"] * 8, tokenizer)
    rejected = align.reply_tensors(prompts, ["aa", "bb"] * 8, tokenizer)
    reference = tiny_gpt(6, vocab=5, block=64)

    def tuned():
        policy = copy.deepcopy(reference)
        align.train_dpo(
            policy, reference, chosen, rejected, steps=30, lr=1e-2, beta=0.5, batch_size=8
        )
        return policy.eval()

    def margin(model):  # mean log pi(chosen) - log pi(rejected)
        with torch.no_grad():
            return (sequence_log_prob(model, *chosen) - sequence_log_prob(model, *rejected)).mean()

    policy = tuned()
    assert margin(policy) > margin(reference) + 2.0
    for name, value in tuned().state_dict().items():
        torch.testing.assert_close(policy.state_dict()[name], value)
    with pytest.raises(ValueError, match="one shape"):
        align.train_dpo(
            policy, reference, chosen, (rejected[0][:3], rejected[1][:3]), steps=1, lr=1e-3, beta=1
        )


def test_chosen_alignment_keeps_to_the_kl_budget(tmp_path, monkeypatch):
    sweep = {
        "methods": {
            "rl": {
                "0.1": {"0": {"gold": 3.0, "kl": 0.0}, "10": {"gold": 3.4, "kl": 2.0}},
                "0.01": {"10": {"gold": 3.4, "kl": 1.0}, "20": {"gold": 3.6, "kl": 5.0}},
            },
            "best_of_n": {"1": {"gold": 3.0, "kl": 0.0}, "4": {"gold": 3.2, "kl": 0.64}},
        }
    }
    monkeypatch.setattr(align, "ALIGN_SWEEP_FILE", tmp_path / "sweep.json")
    align.ALIGN_SWEEP_FILE.write_text(json.dumps(sweep))
    assert align.chosen_alignment("rl", 6.0) == {"beta": 0.01, "steps": 20, "gold": 3.6, "kl": 5.0}
    # a tie at 3.4: the same steps, so the larger beta
    assert align.chosen_alignment("rl", 3.0)["beta"] == 0.1
    assert align.chosen_alignment("best_of_n", 0.5) == {"n": 1, "gold": 3.0, "kl": 0.0}
    with pytest.raises(ValueError, match="no rl setting"):
        align.chosen_alignment("rl", 0.5)  # step 0 is the starting model, not a setting
    with pytest.raises(ValueError, match="unknown method"):
        align.chosen_alignment("ppo", 1.0)


def test_use_prompts_draw_from_their_own_words():
    words = align.use_words()
    assert sorted(map(len, words.values())) == [20, 20, 60]
    assert not set(words["train"]) & set(words["test"])
    asked, prompts = align.use_prompts("test", 50)
    assert set(asked) <= set(words["test"]) and prompts[0] == f"Use: {asked[0]}\n"
    assert align.use_prompts("test", 50) == (asked, prompts)
    with pytest.raises(ValueError, match="part"):
        align.use_prompts("train", 5)


def test_the_stored_alignment_sweep_gives_rl_and_dpo_the_same_steps():
    sweep = align.load_alignment_sweep()
    assert sweep["budget"] == "full"
    rl, dpo = sweep["methods"]["rl"], sweep["methods"]["dpo"]
    assert len(rl) == len(dpo) == 4
    steps = {tuple(by_steps) for by_steps in [*rl.values(), *dpo.values()]}
    assert len(steps) == 1 and int(max(next(iter(steps)), key=int)) == align.ALIGN_RECIPE["steps"]
    for method in ("rl", "dpo", "best_of_n"):
        assert align.chosen_alignment(method, 4.0)["kl"] <= 4.0
