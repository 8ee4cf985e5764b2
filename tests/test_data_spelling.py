import random

import pytest
import torch

from fmbook import lm
from fmbook.data import VALIDATION_PLAYS, plays
from fmbook.data.spelling import (
    few_shot,
    few_shot_index,
    misspell,
    spelling_splits,
    spelling_task,
    verse_lines,
)


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
    with pytest.raises(ValueError, match="n_words"):
        misspell(line, 0, rng)


def test_spelling_task_and_few_shot():
    lines = verse_lines(
        "ROSS:\nWhere the Norweyan banners flout the sky\n"
        "And fan our people cold. Norway himself,\n"
        "Great happiness!\nConfronted him with self-comparisons, now and then\n"
        "Point against point rebellious, arm 'gainst arm.\n"
        "Curbing his lavish spirit: and, to conclude,\n"
    )
    assert "Great happiness!" not in lines and "ROSS:" not in lines and len(lines) == 5
    encode = lambda s: [ord(ch) % 50 for ch in s]  # noqa: E731
    task = spelling_task(lines * 4, encode, length=64, pad_id=0, seed=1)
    assert task.ids.shape == (20, 64) and task.labels.sum() == 10
    for text, label, n, row in zip(
        task.texts, task.labels.tolist(), task.lengths.tolist(), task.ids
    ):
        assert (text in lines) == (label == 1) and n == len(text)
        assert row[:n].tolist() == encode(text) and (row[n:] == 0).all()
    small = few_shot(task, 3, seed=0)
    assert len(small) == 6 and torch.bincount(small.labels).tolist() == [3, 3]
    assert few_shot(task, 3, seed=0).texts == small.texts  # same seed, same examples
    with pytest.raises(ValueError, match="only 10"):
        few_shot(task, 11, seed=0)
    with pytest.raises(ValueError, match="length"):
        spelling_task(lines, encode, length=8, pad_id=0)


def test_few_shot_draws_are_nested_and_index_the_task():
    encode = lambda s: [ord(ch) % 50 for ch in s]  # noqa: E731
    lines = [f"Where the Norweyan banners flout line {i}" for i in range(40)]
    task = spelling_task(lines, encode, length=64, pad_id=0, seed=1)
    small, large = few_shot_index(task, 3, seed=5), few_shot_index(task, 8, seed=5)
    assert set(small.tolist()) <= set(large.tolist())
    assert few_shot(task, 8, seed=5).texts == tuple(task.texts[i] for i in large.tolist())
    assert torch.bincount(task.labels[large]).tolist() == [8, 8]
    assert not torch.equal(few_shot_index(task, 8, seed=6), large)


def test_spelling_splits_are_disjoint_balanced_and_sized_by_the_budget():
    tokenizer = lm.char_data().tokenizer
    pad_id = tokenizer.encode(" ")[0]
    splits = spelling_splits(tokenizer.encode, pad_id, lm.TEST_PLAYS, budget="test")
    assert (len(splits.val), len(splits.labelled), len(splits.test)) == (100, 192, 400)
    assert not set(splits.val.texts) & set(splits.labelled.texts)
    test_plays = [p for p in plays() if p.slug in lm.TEST_PLAYS]
    train_text = "\n".join(p.text for p in plays() if p.slug not in VALIDATION_PLAYS)
    correct = [t for t, y in zip(splits.test.texts, splits.test.labels.tolist()) if y == 1]
    assert all(any(t in p.text for p in test_plays) for t in correct)  # from the test plays
    assert sum(t in train_text for t in correct) < len(correct) / 10
    for task in (splits.val, splits.labelled, splits.test):
        assert abs(task.labels.float().mean().item() - 0.5) < 0.1
        assert task.ids.shape[1] == 64
    stacked, rows = splits.stacked()
    assert len(stacked) == 692 and torch.equal(stacked.ids[rows["labelled"]], splits.labelled.ids)
    assert stacked.texts[rows["test"][0]] == splits.test.texts[0]
    with pytest.raises(ValueError, match="test_plays"):
        spelling_splits(tokenizer.encode, pad_id, ["hamlet"], budget="test")
    with pytest.raises(ValueError, match="budget"):
        spelling_splits(tokenizer.encode, pad_id, lm.TEST_PLAYS, budget="huge")
