"""Tokenizers: text to integer ids and back.

:class:`CharTokenizer` gives every distinct character of a training text its
own id. Byte-level BPE joins it in the LLM chapter.
"""

from __future__ import annotations

import json
from pathlib import Path


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of training characters.

    Characters that were not in the training text are rejected with an error
    that names them (there is no unknown token: a character model that silently
    drops text would hide a data bug).
    """

    def __init__(self, chars: str | list[str]):
        chars = list(chars)
        if not chars:
            raise ValueError("CharTokenizer: the vocabulary is empty; train on a non-empty text")
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("CharTokenizer: the vocabulary must be single characters")
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer: the vocabulary has repeated characters")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        """The tokenizer whose vocabulary is every character of ``text``, sorted."""
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer.train: expected str, got {type(text).__name__}")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """The id of each character of ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer.encode: expected str, got {type(text).__name__}")
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            unknown = sorted({c for c in text if c not in self.stoi})
            raise ValueError(
                f"CharTokenizer.encode: characters not in the vocabulary: {unknown!r} "
                f"(the vocabulary has {self.vocab_size} characters)"
            ) from None

    def decode(self, ids) -> str:
        """The text of a sequence of ids (a list or a 1-D tensor)."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        out = []
        for i in ids:
            if isinstance(i, list) or not 0 <= int(i) < self.vocab_size:
                raise ValueError(
                    f"CharTokenizer.decode: id {i!r} is not in [0, {self.vocab_size}); "
                    "expected a flat sequence of token ids"
                )
            out.append(self.chars[int(i)])
        return "".join(out)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"type": "char", "chars": self.chars}), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("type") != "char":
            raise ValueError(f"{path}: not a CharTokenizer file (type={data.get('type')!r})")
        return cls(data["chars"])

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
