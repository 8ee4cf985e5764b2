import random

import pytest
import torch

from fmbook.adapt import (
    LoRALinear,
    PooledClassifier,
    SurprisalClassifier,
    add_lora,
    count_parameters,
    few_shot,
    misspell,
    spelling_task,
    verse_lines,
)
from fmbook.transformer import GPT, GPTConfig


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()


def test_lora_starts_identical_to_the_base_model_and_trains_only_A_and_B():
    model = tiny_gpt()
    idx = torch.randint(0, 20, (3, 16), generator=torch.Generator().manual_seed(1))
    before = model(idx)[0]
    names = add_lora(model, ["attn.qkv", "attn.proj"], rank=4)
    assert names == ["blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.1.attn.qkv", "blocks.1.attn.proj"]
    torch.testing.assert_close(model(idx)[0], before, rtol=0, atol=0)  # B = 0: exactly the base model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"blocks.{i}.attn.{m}.{ab}" for i in (0, 1) for m in ("qkv", "proj") for ab in "AB"}
    n_train, n_total = count_parameters(model)
    # qkv: A (4 x 16) + B (48 x 4); proj: A (4 x 16) + B (16 x 4); two layers
    assert n_train == 2 * ((4 * 16 + 48 * 4) + (4 * 16 + 16 * 4))
    assert n_total == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def test_lora_update_is_the_low_rank_product_and_merges():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    lora = LoRALinear(base, rank=2, alpha=4.0)
    with torch.no_grad():
        lora.B.normal_()
    x = torch.randn(7, 6)
    expected = base(x) + (4.0 / 2) * x @ (lora.B @ lora.A).T
    torch.testing.assert_close(lora(x), expected)
    torch.testing.assert_close(lora.merged()(x), expected)
    assert torch.linalg.matrix_rank(lora.merged().weight - base.weight) <= 2


def test_lora_learns_while_the_base_weights_stay_bit_identical():
    model = tiny_gpt()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    add_lora(model, ["qkv"], rank=2)
    clf = PooledClassifier(model, 2)
    opt = torch.optim.Adam([p for p in clf.parameters() if p.requires_grad], lr=1e-2)
    idx = torch.randint(0, 20, (8, 16), generator=torch.Generator().manual_seed(2))
    y, lengths = torch.arange(8) % 2, torch.full((8,), 16)
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(clf(idx, lengths), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, p in clf.backbone.named_parameters():
        if name.endswith((".A", ".B")):
            continue
        key = name.replace(".base.", ".")
        assert torch.equal(p, frozen[key]), name
    assert clf.backbone.blocks[0].attn.qkv.B.abs().sum() > 0


def test_lora_rejects_bad_rank_and_unknown_modules():
    model = tiny_gpt()
    with pytest.raises(ValueError, match="rank must be an int >= 1"):
        add_lora(model, ["qkv"], rank=0)
    with pytest.raises(ValueError, match="no linear layer of the model is named 'attn.query'"):
        add_lora(model, ["attn.query"], rank=2)
    with pytest.raises(ValueError, match="non-empty list"):
        add_lora(model, "qkv", rank=2)
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(torch.nn.Conv1d(2, 2, 1), rank=1)


def test_surprisal_features_are_the_language_model_losses_and_ignore_padding():
    model = tiny_gpt()
    clf = SurprisalClassifier(model, 2, top=3)
    idx = torch.randint(0, 20, (2, 16), generator=torch.Generator().manual_seed(3))
    lengths = torch.tensor([10, 16])
    feats = clf.features(idx, lengths)
    with torch.no_grad():
        logits = model(idx)[0]
    for row, n in enumerate(lengths.tolist()):
        s = torch.stack([-torch.log_softmax(logits[row, t - 1], -1)[idx[row, t]] for t in range(1, n)])
        torch.testing.assert_close(
            feats[row], torch.cat([s.topk(3).values, s.mean()[None]]), atol=1e-5, rtol=1e-5
        )
    # a causal model's features of a padded passage do not depend on what the padding is
    other = idx.clone()
    other[0, 10:] = (other[0, 10:] + 1) % 20
    torch.testing.assert_close(clf.features(other, lengths)[0], feats[0])
    with pytest.raises(ValueError, match="lengths must have shape"):
        clf.features(idx, torch.tensor([3]))


def test_misspell_swaps_neighbouring_letters_in_n_words():
    rng = random.Random(0)
    line = "Where the Norweyan banners flout the sky"
    for _ in range(20):
        out = misspell(line, 2, rng)
        changed = [(a, b) for a, b in zip(line.split(), out.split()) if a != b]
        assert len(changed) == 2 and len(out) == len(line)
        for a, b in changed:
            assert sorted(a) == sorted(b) and len(a) >= 4
            assert sum(x != y for x, y in zip(a, b)) == 2
    assert misspell("To be or not", 1, rng) is None  # no word with four letters
    with pytest.raises(ValueError, match="n_words must be >= 1"):
        misspell(line, 0, rng)


def test_spelling_task_and_few_shot():
    lines = verse_lines(
        "ROSS:\nWhere the Norweyan banners flout the sky\nAnd fan our people cold. Norway himself,\n"
        "Great happiness!\nConfronted him with self-comparisons, now and then\n"
        "Point against point rebellious, arm 'gainst arm.\nCurbing his lavish spirit: and, to conclude,\n"
    )
    assert "Great happiness!" not in lines and "ROSS:" not in lines and len(lines) == 5
    encode = lambda s: [ord(ch) % 50 for ch in s]  # noqa: E731
    task = spelling_task(lines * 4, encode, length=64, pad_id=0, seed=1)
    assert task.ids.shape == (20, 64) and task.labels.sum() == 10
    for text, label, n, row in zip(task.texts, task.labels.tolist(), task.lengths.tolist(), task.ids):
        assert (text in lines) == (label == 1) and n == len(text)
        assert row[:n].tolist() == encode(text) and (row[n:] == 0).all()
    small = few_shot(task, 3, seed=0)
    assert len(small) == 6 and torch.bincount(small.labels).tolist() == [3, 3]
    assert few_shot(task, 3, seed=0).texts == small.texts  # same seed, same examples
    with pytest.raises(ValueError, match="only 10"):
        few_shot(task, 11, seed=0)
    with pytest.raises(ValueError, match="more than length=8"):
        spelling_task(lines, encode, length=8, pad_id=0)
