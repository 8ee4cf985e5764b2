"""Tokenizers: text to integer ids and back.

:class:`CharTokenizer` gives every distinct character of a training text its
own id; :class:`BPETokenizer` starts from the 256 byte values and learns
merges of frequent pairs (byte-level BPE, as in GPT-2).
"""

from __future__ import annotations

import heapq
import json
from collections import Counter, defaultdict
from pathlib import Path

import regex


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


# GPT-2's pre-tokenizer (the pattern of its released encoder, contractions grouped):
# split text into contractions, words, numbers, punctuation runs and spaces before BPE,
# so that no merge joins letters to digits, punctuation or the next word (Radford et al. 2019).
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of ``pair`` in ``ids``, left to right, by
    ``new_id``."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def learn_merges(word_counts: dict[bytes, int], num_merges: int) -> list[tuple[int, int]]:
    """Byte-pair merges learned from ``word_counts`` (pre-tokenized words and their frequencies).

    Each step merges the most frequent adjacent pair (ties: the smallest pair),
    giving it the next id ``256 + step``. Pair counts are updated only for the
    words that contain the merged pair, so training costs about the number of
    affected words per merge rather than a recount of the corpus.
    """
    words = [list(w) for w in word_counts]
    freqs = list(word_counts.values())
    counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for i, (w, f) in enumerate(zip(words, freqs)):
        for pair in zip(w, w[1:]):
            counts[pair] += f
            where[pair].add(i)
    heap = [(-c, p) for p, c in counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[int, int]] = []
    while len(merges) < num_merges:
        while heap and (-heap[0][0] != counts.get(heap[0][1], 0)):
            heapq.heappop(heap)  # a stale entry: the pair's count changed since it was pushed
        if not heap or heap[0][0] == 0:
            break  # no pair occurs any more
        _, pair = heapq.heappop(heap)
        new_id = 256 + len(merges)
        merges.append(pair)
        changed = set()
        for i in where.pop(pair, ()):
            w, f = words[i], freqs[i]
            if len(w) < 2:
                continue
            for p in zip(w, w[1:]):
                counts[p] -= f
                changed.add(p)
            w = words[i] = merge(w, pair, new_id)
            for p in zip(w, w[1:]):
                counts[p] += f
                where[p].add(i)
                changed.add(p)
        counts.pop(pair, None)
        changed.discard(pair)
        for p in changed:
            if counts[p] > 0:
                heapq.heappush(heap, (-counts[p], p))
    return merges


class BPETokenizer:
    """Byte-level byte-pair encoding (Sennrich et al. 2016; GPT-2's byte-level variant).

    The base vocabulary is the 256 byte values, so any text can be encoded and
    nothing is ever unknown; each learned merge adds one token. Text is first
    split by :data:`GPT2_SPLIT_PATTERN` and merges apply inside each piece.
    """

    def __init__(self, merges=(), pattern: str = GPT2_SPLIT_PATTERN):
        self.pattern = pattern
        self._split = regex.compile(pattern)
        self.merges: dict[tuple[int, int], int] = {}
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
        for i, (a, b) in enumerate(merges):
            a, b = int(a), int(b)
            new_id = 256 + i
            if a >= new_id or b >= new_id or a < 0 or b < 0:
                raise ValueError(
                    f"BPETokenizer: merge {i} ({a}, {b}) refers to a token that does not exist yet"
                )
            self.merges[(a, b)] = new_id
            self.vocab[new_id] = self.vocab[a] + self.vocab[b]
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def train(cls, text: str, vocab_size: int, pattern: str = GPT2_SPLIT_PATTERN) -> BPETokenizer:
        """Learn ``vocab_size - 256`` merges from ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"BPETokenizer.train: expected str, got {type(text).__name__}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(
                "BPETokenizer.train: vocab_size must be an int >= 256 (the bytes), "
                f"got {vocab_size!r}"
            )
        word_counts = Counter(piece.encode("utf-8") for piece in regex.findall(pattern, text))
        return cls(learn_merges(word_counts, vocab_size - 256), pattern)

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges)

    def truncated(self, num_merges: int) -> BPETokenizer:
        """The tokenizer with only the first ``num_merges`` merges (vocabulary
        ``256 + num_merges``)."""
        if not 0 <= num_merges <= len(self.merges):
            raise ValueError(
                f"truncated: num_merges must be in [0, {len(self.merges)}], got {num_merges}"
            )
        return BPETokenizer(list(self.merges)[:num_merges], self.pattern)

    def _encode_piece(self, piece: str) -> list[int]:
        ids = self._cache.get(piece)
        if ids is not None:
            return ids
        ids = list(piece.encode("utf-8"))
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: self.merges.get(p, float("inf")))
            if pair not in self.merges:
                break
            ids = merge(ids, pair, self.merges[pair])
        self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``: split into pieces, then apply the merges in the order learned."""
        if not isinstance(text, str):
            raise TypeError(f"BPETokenizer.encode: expected str, got {type(text).__name__}")
        out: list[int] = []
        for piece in self._split.findall(text):
            out.extend(self._encode_piece(piece))
        return out

    def decode(self, ids) -> str:
        """Text of ``ids``; byte sequences that are not valid UTF-8 become U+FFFD."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        try:
            data = b"".join(self.vocab[int(i)] for i in ids)
        except KeyError as err:
            raise ValueError(
                f"BPETokenizer.decode: id {err.args[0]} is not in [0, {self.vocab_size})"
            ) from None
        return data.decode("utf-8", errors="replace")

    def save(self, path: str | Path) -> None:
        doc = {"type": "bpe", "pattern": self.pattern, "merges": [list(p) for p in self.merges]}
        Path(path).write_text(json.dumps(doc), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("type") != "bpe":
            raise ValueError(f"{path}: not a BPETokenizer file (type={data.get('type')!r})")
        return cls([tuple(p) for p in data["merges"]], data["pattern"])

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"
