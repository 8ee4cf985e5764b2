"""Instructions built from the plays by code: the data set of the alignment chapter.

Each :class:`Instruction` is a prompt (an instruction and its input, on one line) and the response
that follows it, both ending with a newline, so that a model learns where its answer stops:

* ``spell``: ``"Spell: Good nihgt, sweet\\n"`` -> ``"Good night, sweet\\n"`` (one misspelt word, two
  neighbouring letters swapped as in the adaptation chapter's spelling task);
* ``shout``: ``"Shout: Good night\\n"`` -> ``"GOOD NIGHT\\n"``;
* ``word``: ``"Use: night\\n"`` -> a line of the plays that contains the word ``night``.

Lines and words come from whole plays (:func:`instructions` takes the plays' slugs), so a split
by plays keeps every test line and speaker unseen in training. The book's GPT reads at most
:data:`BLOCK` characters, so the lines are short: at most :data:`COPY_CHARS` characters for the
tasks that write the line back, at most :data:`LINE_CHARS` for a line containing a word.
:func:`follows` is the check of a response that every task defines in code.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from fmbook.data.shakespeare import VALIDATION_PLAYS, plays
from fmbook.data.spelling import misspell

TASKS = ("spell", "shout", "word")
TEMPLATES = {"spell": "Spell: {}\n", "shout": "Shout: {}\n", "word": "Use: {}\n"}
"""The prompt of each task; ``{}`` is its input."""
BLOCK = 64
"""The context of the book's GPT: a prompt and its response together are at most one block."""
COPY_CHARS = 24
LINE_CHARS = 40
MIN_WORD = 5
"""The asked-for words have at least this many letters (which leaves out most little words)."""
_WORD = re.compile(r"[a-z]+")
TRAIN_PLAYS = tuple(sorted(set(p.slug for p in plays()) - set(VALIDATION_PLAYS)))
"""The plays the book's language models were trained on: the instruction-tuning examples."""
TUNING_PLAYS, TEST_PLAYS = VALIDATION_PLAYS[:2], VALIDATION_PLAYS[2:]
"""The plays of :data:`fmbook.lm.TUNING_PLAYS` (choices) and :data:`fmbook.lm.TEST_PLAYS`."""


@dataclass(frozen=True)
class Instruction:
    """One example: its task, the prompt, the response, and the task's input (line or word)."""

    task: str
    prompt: str
    response: str
    given: str


def spoken_lines(text: str) -> list[str]:
    """The spoken lines of a play, stripped; speaker names (capitals ending with ``":"``) left
    out."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not (line.endswith(":") and line.isupper())]


def words_of(line: str) -> list[str]:
    """The words of ``line``, lower-cased letters only (``"Night's"`` gives ``night``, ``s``)."""
    return _WORD.findall(line.lower())


def lines_of(slugs: Sequence[str]) -> list[str]:
    """The spoken lines of the plays ``slugs``, in the order of the corpus."""
    if isinstance(slugs, str) or not slugs:
        raise ValueError(f"lines_of: slugs must be a non-empty list of play slugs, got {slugs!r}")
    unknown = sorted(set(slugs) - {p.slug for p in plays()})
    if unknown:
        raise ValueError(f"lines_of: unknown plays {unknown}")
    return [line for p in plays() if p.slug in slugs for line in spoken_lines(p.text)]


def common_words(lines: Sequence[str], n: int) -> list[str]:
    """The ``n`` most frequent words of at least :data:`MIN_WORD` letters in ``lines`` (ties
    broken alphabetically, so the list is the same on every machine)."""
    counts = Counter(w for line in lines for w in words_of(line) if len(w) >= MIN_WORD)
    return sorted(counts, key=lambda w: (-counts[w], w))[:n]


def instructions(
    slugs: Sequence[str], n_per_task: int, words: Sequence[str], seed: int = 0
) -> list[Instruction]:
    """``n_per_task`` examples of each task (or as many as the plays give) from the lines of
    ``slugs``, drawn with ``seed``; the ``word`` task asks only for ``words``.

    Every example fits :data:`BLOCK`: ``len(prompt + response) <= BLOCK``. The lines are shuffled
    once and each task takes the first lines that suit it, so the tasks share lines.
    """
    if isinstance(n_per_task, bool) or not isinstance(n_per_task, int) or n_per_task < 1:
        raise ValueError(f"instructions: n_per_task must be an int >= 1, got {n_per_task!r}")
    if isinstance(words, str) or not words:
        raise ValueError(f"instructions: words must be a non-empty list of words, got {words!r}")
    wanted = set(words)
    rng = random.Random(seed)
    lines = lines_of(slugs)
    rng.shuffle(lines)
    out: dict[str, list[Instruction]] = {task: [] for task in TASKS}

    def add(task, given, response):
        if len(out[task]) < n_per_task:
            example = Instruction(task, TEMPLATES[task].format(given), response + "\n", given)
            if len(example.prompt + example.response) <= BLOCK:
                out[task].append(example)

    for line in lines:
        if len(line.split()) >= 2 and len(line) <= COPY_CHARS:
            typo = misspell(line, 1, rng)
            if typo is not None:
                add("spell", typo, line)
            if line.upper() != line:
                add("shout", line, line.upper())
        if len(line) <= LINE_CHARS and len(line.split()) >= 2:
            present = sorted(set(words_of(line)) & wanted)
            if present:
                add("word", rng.choice(present), line)
        if all(len(v) == n_per_task for v in out.values()):
            break
    return [example for task in TASKS for example in out[task]]


@dataclass(frozen=True)
class Splits:
    """Instructions split by whole plays: ``train`` from :data:`TRAIN_PLAYS`, ``val`` from
    :data:`TUNING_PLAYS`, ``test`` from :data:`TEST_PLAYS`; ``words`` are the words that the
    ``word`` task asks for, the most common of the training plays."""

    train: list[Instruction]
    val: list[Instruction]
    test: list[Instruction]
    words: list[str]


def splits(n_train: int, n_val: int, n_test: int, n_words: int = 100, seed: int = 0) -> Splits:
    """:func:`instructions` per task: ``n_train`` from the training plays, ``n_val`` from the
    tuning plays and ``n_test`` from the test plays, all asking for the :func:`common_words`
    ``(n_words)`` of the training plays. The three parts share no play, so no test line, and no
    line that a choice was made on, was ever trained on."""
    words = common_words(lines_of(TRAIN_PLAYS), n_words)
    return Splits(
        instructions(TRAIN_PLAYS, n_train, words, seed),
        instructions(TUNING_PLAYS, n_val, words, seed + 1),
        instructions(TEST_PLAYS, n_test, words, seed + 2),
        words,
    )


RUBRIC = ("uses the word", "real words", "no repeats", "a full line")
"""The parts of :func:`rubric`, each worth at most one point."""
FULL_LINE_WORDS = 6


def known_words(slugs: Sequence[str] = TRAIN_PLAYS) -> frozenset[str]:
    """Every word (:func:`words_of`) of the spoken lines of the plays ``slugs``."""
    return frozenset(w for line in lines_of(slugs) for w in words_of(line))


def rubric(word: str, reply: str, known: frozenset[str]) -> dict[str, float]:
    """The gold preference of the ``Use`` task, part by part, each in [0, 1]:

    * ``uses the word``: 1 if the reply contains ``word``, else 0;
    * ``real words``: the share of the reply's words that are in ``known``;
    * ``no repeats``: the share of its words that are distinct (1 when no word repeats);
    * ``a full line``: its number of words over :data:`FULL_LINE_WORDS`, at most 1.

    A reply without words scores 0 on every part. :func:`gold_reward` is the sum.
    """
    words = words_of(reply)
    if not words:
        return dict.fromkeys(RUBRIC, 0.0)
    return {
        "uses the word": float(word in words),
        "real words": sum(w in known for w in words) / len(words),
        "no repeats": len(set(words)) / len(words),
        "a full line": min(len(words), FULL_LINE_WORDS) / FULL_LINE_WORDS,
    }


def gold_reward(word: str, reply: str, known: frozenset[str]) -> float:
    """The gold reward of ``reply`` to ``"Use: word"``: the sum of the :func:`rubric`'s parts,
    between 0 and 4."""
    return sum(rubric(word, reply, known).values())


def follows(example: Instruction, response: str) -> bool:
    """Whether ``response`` (with or without its final newline) does what ``example`` asked.

    ``spell``: it is the line as the play spells it; ``shout``: it is the line in capitals;
    ``word``: it is a line of at least two words that contains the word.
    """
    if example.task not in TASKS:
        raise ValueError(f"follows: unknown task {example.task!r}; tasks: {', '.join(TASKS)}")
    answer = response.removesuffix("\n")
    if example.task == "word":
        return len(answer.split()) >= 2 and example.given in words_of(answer)
    return answer == example.response.removesuffix("\n")
