"""fmbook.tokenizers: the character tokenizer and byte-level BPE."""

import time
from collections import Counter

import pytest
import regex
import tokenizers  # a requirement of the book (requirements.txt): the reference byte-level BPE
from hypothesis import given, settings
from hypothesis import strategies as st

from fmbook.data import corpus
from fmbook.tokenizers import GPT2_SPLIT_PATTERN, BPETokenizer, CharTokenizer, merge

# --- characters ---


@given(st.text(min_size=1, max_size=200))
def test_char_tokenizer_round_trip(text):
    tok = CharTokenizer.train(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab_size == len(set(text))


def test_char_tokenizer_ids_follow_sorted_characters():
    tok = CharTokenizer.train("banana!")
    assert tok.chars == ["!", "a", "b", "n"]
    assert tok.encode("nab") == [3, 1, 2]


def test_char_tokenizer_rejects_unknown_characters_and_ids():
    tok = CharTokenizer.train("abc")
    with pytest.raises(ValueError, match="'z'"):
        tok.encode("abz")
    with pytest.raises(ValueError, match="id 3"):
        tok.decode([0, 3])
    with pytest.raises(TypeError, match="str"):
        tok.encode(123)
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer("")
    with pytest.raises(ValueError, match="repeated"):
        CharTokenizer("aa")


def test_char_tokenizer_save_load(tmp_path):
    tok = CharTokenizer.train("hello, world")
    tok.save(tmp_path / "t.json")
    again = CharTokenizer.load(tmp_path / "t.json")
    assert again.chars == tok.chars
    assert again.decode(tok.encode("low")) == "low"
    BPETokenizer().save(tmp_path / "bpe.json")
    with pytest.raises(ValueError, match="CharTokenizer"):
        CharTokenizer.load(tmp_path / "bpe.json")


# --- byte-pair encoding ---


def naive_merges(text: str, vocab_size: int) -> list[tuple[int, int]]:
    """Recount every pair after every merge: slow, obviously right."""
    words = [list(p.encode()) for p in regex.findall(GPT2_SPLIT_PATTERN, text)]
    merges = []
    for new_id in range(256, vocab_size):
        counts = Counter(pair for w in words for pair in zip(w, w[1:]))
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges.append(pair)
        words = [merge(w, pair, new_id) for w in words]
    return merges


def test_merge():
    assert merge([1, 2, 1, 2, 2], (1, 2), 9) == [9, 9, 2]
    assert merge([5, 5, 5], (5, 5), 7) == [7, 5]


@pytest.mark.parametrize(
    "text", ["aaabdaaabac", "the cat sat on the mat, the end", "ab " * 50 + "ba " * 7]
)
def test_incremental_training_equals_naive_recount(text):
    assert BPETokenizer.train(text, 280).merges == dict(
        (p, 256 + i) for i, p in enumerate(naive_merges(text, 280))
    )


def test_incremental_training_equals_naive_on_a_real_passage():
    text = corpus("validation")[:20_000]
    assert list(BPETokenizer.train(text, 400).merges) == naive_merges(text, 400)


def test_training_stops_when_nothing_is_left_to_merge():
    tok = BPETokenizer.train("ab", 1000)
    assert tok.vocab_size == 257 and tok.encode("ab") == [256]


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=120))
def test_round_trip_any_text(text):
    tok = BPETokenizer.train("hello world, héllo wörld! 123 " * 3, 300)
    assert tok.decode(tok.encode(text)) == text


def test_save_load_and_truncate(tmp_path):
    tok = BPETokenizer.train(corpus("validation")[:5000], 300)
    tok.save(tmp_path / "bpe.json")
    again = BPETokenizer.load(tmp_path / "bpe.json")
    text = "To be, or not to be"
    assert again.encode(text) == tok.encode(text)
    short = tok.truncated(10)
    assert short.vocab_size == 266 and short.decode(short.encode(text)) == text
    assert len(short.encode(text)) >= len(tok.encode(text))


def test_bad_input():
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train("abc", 100)
    with pytest.raises(TypeError, match="str"):
        BPETokenizer.train(b"abc", 300)
    with pytest.raises(ValueError, match="id 999"):
        BPETokenizer().decode([999])
    with pytest.raises(ValueError, match="does not exist"):
        BPETokenizer([(300, 1)])
    with pytest.raises(ValueError, match="num_merges"):
        BPETokenizer().truncated(1)


def test_corpus_training_is_fast_and_compresses_like_hugging_face():
    """Whole training corpus, vocabulary 1024: under 60 s of CPU, and bytes per token within
    3% of Hugging Face tokenizers' byte-level BPE."""
    train, val = corpus("train"), corpus("validation")
    start = time.process_time()
    ours = BPETokenizer.train(train, 1024)
    seconds = time.process_time() - start
    assert ours.vocab_size == 1024
    assert seconds < 60, f"BPE training took {seconds:.1f} s of CPU"
    hf = tokenizers.ByteLevelBPETokenizer()
    hf.train_from_iterator([train], vocab_size=1024, min_frequency=1, show_progress=False)
    n_bytes = len(val.encode())
    ours_bpt = n_bytes / len(ours.encode(val))
    hf_bpt = n_bytes / len(hf.encode(val).ids)
    assert abs(ours_bpt - hf_bpt) / hf_bpt < 0.03, (ours_bpt, hf_bpt)
    assert ours.decode(ours.encode(val)) == val
