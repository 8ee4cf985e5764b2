"""The spelling task of the adaptation chapter: is a line of Shakespeare spelt correctly, or have
two of its words been misspelt by swapping two neighbouring letters?

Lines come from the plays (:func:`verse_lines`); half of them get typos (:func:`misspell`), and
the passages are encoded and padded into a :class:`TextTask` (:func:`spelling_task`).
:func:`spelling_splits` makes the three splits the chapter's notebooks share: labelled lines and
a validation split from the training plays, test lines from the held-out test plays.
:func:`few_shot` draws ``k`` labelled examples per class.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from fmbook import budget as budgets
from fmbook.data.shakespeare import VALIDATION_PLAYS, plays

LENGTH = 64
"""Every passage is padded to this many tokens (longer lines are never chosen)."""


@dataclass(frozen=True)
class TextTask:
    """Passages with labels; ``ids`` are the passages encoded and padded to one length,
    ``lengths`` their real lengths."""

    texts: tuple[str, ...]
    labels: torch.Tensor
    ids: torch.Tensor
    lengths: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index) -> TextTask:
        """The passages at the positions ``index``, in that order."""
        index = torch.as_tensor(index, dtype=torch.long)
        return TextTask(
            tuple(self.texts[i] for i in index.tolist()),
            self.labels[index],
            self.ids[index],
            self.lengths[index],
            self.classes,
        )


def verse_lines(text: str, min_words: int = 6, max_chars: int = LENGTH) -> list[str]:
    """Spoken lines of a play with at least ``min_words`` words and at most ``max_chars``
    characters (speaker names, which end with ``":"``, are skipped)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.endswith(":") or len(line) > max_chars or len(line.split()) < min_words:
            continue
        out.append(line)
    return out


def misspell(line: str, n_words: int, rng: random.Random) -> str | None:
    """The line with ``n_words`` of its words misspelt by swapping two neighbouring, different
    letters (``"thing"`` -> ``"hting"``); only words with at least four letters are touched.
    None if the line has too few such words."""
    if n_words < 1:
        raise ValueError(f"misspell: n_words must be >= 1, got {n_words}")
    words = line.split(" ")
    swaps = {}
    for i, w in enumerate(words):
        spots = [
            j
            for j in range(len(w) - 1)
            if w[j].isalpha() and w[j + 1].isalpha() and w[j] != w[j + 1]
        ]
        if sum(ch.isalpha() for ch in w) >= 4 and spots:
            swaps[i] = spots
    if len(swaps) < n_words:
        return None
    for i in rng.sample(sorted(swaps), n_words):
        j = rng.choice(swaps[i])
        w = list(words[i])
        w[j], w[j + 1] = w[j + 1], w[j]
        words[i] = "".join(w)
    return " ".join(words)


def spelling_task(
    lines: Sequence[str], encode, length: int, pad_id: int, n_typos: int = 2, seed: int = 0
) -> TextTask:
    """Half the ``lines`` as written (label 1, "correct"), half with ``n_typos`` misspelt words
    (label 0), shuffled with ``seed``. Every passage is encoded with ``encode`` and padded with
    ``pad_id`` to ``length``."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i, line in enumerate(rng.sample(list(lines), len(lines))):
        text = line if i % 2 == 0 else misspell(line, n_typos, rng)
        if text is not None:
            texts.append(text)
            labels.append(int(i % 2 == 0))
    ids = torch.full((len(texts), length), pad_id, dtype=torch.long)
    lengths = torch.zeros(len(texts), dtype=torch.long)
    for row, text in enumerate(texts):
        encoded = encode(text)
        if len(encoded) > length:
            raise ValueError(
                f"spelling_task: {text!r} has {len(encoded)} tokens, more than length={length}"
            )
        ids[row, : len(encoded)] = torch.tensor(encoded, dtype=torch.long)
        lengths[row] = len(encoded)
    return TextTask(tuple(texts), torch.tensor(labels), ids, lengths, ("misspelt", "correct"))


@dataclass(frozen=True)
class SpellingSplits:
    """The three splits of the spelling task: ``val`` (where every method makes its choices),
    ``labelled`` (to learn from) and ``test`` (from plays no model was trained on)."""

    val: TextTask
    labelled: TextTask
    test: TextTask

    def stacked(self) -> tuple[TextTask, dict[str, torch.Tensor]]:
        """All lines as one task, ``val`` then ``labelled`` then ``test``, and the rows of each
        split in it: ``{"val": rows, "labelled": rows, "test": rows}``."""
        parts = (self.val, self.labelled, self.test)
        task = TextTask(
            sum((p.texts for p in parts), ()),
            torch.cat([p.labels for p in parts]),
            torch.cat([p.ids for p in parts]),
            torch.cat([p.lengths for p in parts]),
            self.test.classes,
        )
        rows = torch.arange(len(task)).split([len(p) for p in parts])
        return task, dict(zip(("val", "labelled", "test"), rows))


def spelling_splits(
    encode: Callable[[str], list[int]],
    pad_id: int,
    test_plays: Sequence[str],
    budget: str | None = None,
) -> SpellingSplits:
    """The chapter's splits of the spelling task, at ``budget`` (default: the current one).

    Validation and labelled lines come from one shuffled pool of the lines of every play outside
    ``VALIDATION_PLAYS`` (the first 100 / 256 lines at the test / full budget are the validation
    split, the next 192 / 640 the labelled lines); the 400 / 1000 test lines come from
    ``test_plays``, which must be held-out plays. Two typos per misspelt line, every passage
    encoded with ``encode`` and padded with ``pad_id`` to :data:`LENGTH` tokens.
    """
    unknown = set(test_plays) - set(VALIDATION_PLAYS)
    if isinstance(test_plays, str) or not test_plays or unknown:
        raise ValueError(
            f"spelling_splits: test_plays must be held-out plays ({', '.join(VALIDATION_PLAYS)}), "
            f"got {test_plays!r}"
        )
    n_val, n_labelled, n_test = budgets.pick(
        test=(100, 192, 400), full=(256, 640, 1000), budget=budget
    )
    train_lines = [
        line for p in plays() if p.slug not in VALIDATION_PLAYS for line in verse_lines(p.text)
    ]
    test_lines = [line for p in plays() if p.slug in test_plays for line in verse_lines(p.text)]
    pool = spelling_task(train_lines, encode, LENGTH, pad_id, n_typos=2, seed=0)
    test = spelling_task(test_lines, encode, LENGTH, pad_id, n_typos=2, seed=1)
    return SpellingSplits(
        val=pool.subset(torch.arange(n_val)),
        labelled=pool.subset(torch.arange(n_val, n_val + n_labelled)),
        test=test.subset(torch.arange(n_test)),
    )


def few_shot_index(task: TextTask, k: int, seed: int) -> torch.Tensor:
    """The positions in ``task`` of ``k`` examples of every class, drawn at random (without
    replacement) with ``seed``. With the same seed, the draw for a smaller ``k`` is part of the
    draw for a larger one."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"few_shot: k must be an int >= 1, got {k!r}")
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(len(task.classes)):
        members = torch.nonzero(task.labels == c).flatten()
        if k > len(members):
            raise ValueError(
                f"few_shot: k={k} examples of class {task.classes[c]!r} asked for, "
                f"but the task has only {len(members)}"
            )
        chosen.append(members[torch.randperm(len(members), generator=g)[:k]])
    return torch.cat(chosen)


def few_shot(task: TextTask, k: int, seed: int) -> TextTask:
    """``k`` examples of every class drawn at random (without replacement) with ``seed``
    (:func:`few_shot_index`)."""
    return task.subset(few_shot_index(task, k, seed))
