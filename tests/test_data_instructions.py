import pytest

from fmbook.data import VALIDATION_PLAYS, plays
from fmbook.data.instructions import (
    BLOCK,
    COPY_CHARS,
    MIN_WORD,
    TASKS,
    Instruction,
    common_words,
    follows,
    instructions,
    lines_of,
    spoken_lines,
    words_of,
)


def test_spoken_lines_leave_out_speakers_and_blank_lines():
    text = "HAMLET:\nTo be, or not to be:\n\n  that is the question  \nOPHELIA:\n"
    assert spoken_lines(text) == ["To be, or not to be:", "that is the question"]


def test_words_of_and_common_words():
    assert words_of("Night's candles, NIGHT!") == ["night", "s", "candles", "night"]
    lines = ["the night, the night", "candles night", "a sweet prince"]
    assert common_words(lines, 3) == ["night", "candles", "prince"]  # >= MIN_WORD letters
    assert all(len(w) >= MIN_WORD for w in common_words(lines_of(["macbeth"]), 50))


def test_lines_of_checks_the_slugs():
    with pytest.raises(ValueError, match="slugs"):
        lines_of("macbeth")
    with pytest.raises(ValueError, match="no-such-play"):
        lines_of(["no-such-play"])


@pytest.fixture(scope="module")
def macbeth():
    words = common_words(lines_of(["macbeth"]), 40)
    return instructions(["macbeth"], 30, words, seed=0), words


def test_every_task_gets_its_examples_and_each_fits_the_block(macbeth):
    examples, _ = macbeth
    assert [e.task for e in examples] == [t for t in TASKS for _ in range(30)]
    for e in examples:
        assert len(e.prompt + e.response) <= BLOCK
        assert e.prompt.endswith("\n") and e.response.endswith("\n")
        assert e.prompt.count("\n") == 1 and e.response.count("\n") == 1


def test_the_gold_response_follows_its_instruction_and_a_wrong_one_does_not(macbeth):
    examples, words = macbeth
    macbeth_lines = set(lines_of(["macbeth"]))
    for e in examples:
        assert follows(e, e.response) and follows(e, e.response.rstrip("\n"))
        assert e.response.rstrip("\n") in macbeth_lines or e.task == "shout"
        if e.task == "spell":
            assert len(e.given) == len(e.response) - 1 <= COPY_CHARS
            assert sum(a != b for a, b in zip(e.given, e.response)) == 2  # one swap
            assert not follows(e, e.given)
        elif e.task == "shout":
            assert e.response == e.given.upper() + "\n" and not follows(e, e.given)
        else:
            assert e.given in words and e.given in words_of(e.response)
            assert not follows(e, "a line without it")
            assert not follows(e, e.given)  # one word is not a line


def test_instructions_are_deterministic_and_the_seed_matters(macbeth):
    examples, words = macbeth
    assert instructions(["macbeth"], 30, words, seed=0) == examples
    assert instructions(["macbeth"], 30, words, seed=1) != examples


def test_held_out_plays_give_lines_no_training_play_has():
    train = [p.slug for p in plays() if p.slug not in VALIDATION_PLAYS][:3]
    words = common_words(lines_of(train), 20)
    test = instructions(["macbeth"], 20, words, seed=0)
    assert {e.response for e in test if e.task != "shout"}.isdisjoint(
        {e.response for e in instructions(train, 20, words, seed=0)}
    )


def test_bad_inputs_say_what_was_expected():
    with pytest.raises(ValueError, match="n_per_task"):
        instructions(["macbeth"], 0, ["night"])
    with pytest.raises(ValueError, match="words"):
        instructions(["macbeth"], 5, "night")
    with pytest.raises(ValueError, match="unknown task"):
        follows(Instruction("sing", "Sing: x\n", "x\n", "x"), "x")


def test_splits_keep_training_tuning_and_test_plays_apart():
    from fmbook import lm
    from fmbook.data import instructions as inst

    assert (inst.TUNING_PLAYS, inst.TEST_PLAYS) == (lm.TUNING_PLAYS, lm.TEST_PLAYS)
    held_out = set(inst.TUNING_PLAYS) | set(inst.TEST_PLAYS)
    assert held_out.isdisjoint(inst.TRAIN_PLAYS)
    assert set(inst.TUNING_PLAYS).isdisjoint(inst.TEST_PLAYS)
    data = inst.splits(5, 4, 3, n_words=50)
    assert [len(data.train), len(data.val), len(data.test)] == [15, 12, 9]
    assert data.words == inst.common_words(inst.lines_of(inst.TRAIN_PLAYS), 50)
    test_lines = set(inst.lines_of(inst.TEST_PLAYS))
    assert all(e.response.removesuffix("\n") in test_lines for e in data.test if e.task != "shout")
    assert all(e.given in data.words for e in data.test if e.task == "word")


def test_rubric_scores_each_part_and_gold_reward_is_their_sum():
    from fmbook.data import instructions as inst

    known = frozenset({"the", "night", "is", "long"})
    parts = inst.rubric("night", "The night is lnog.", known)
    assert parts == {
        "uses the word": 1.0,
        "real words": 0.75,  # "lnog" is not a word of the plays
        "no repeats": 1.0,
        "a full line": 4 / inst.FULL_LINE_WORDS,
    }
    assert inst.gold_reward("night", "The night is lnog.", known) == sum(parts.values())
    looping = inst.rubric("night", "night night night night", known)
    assert looping["no repeats"] == 0.25 and looping["uses the word"] == 1.0
    assert inst.rubric("day", "", known) == dict.fromkeys(inst.RUBRIC, 0.0)
    assert inst.rubric("day", "!?", known) == dict.fromkeys(inst.RUBRIC, 0.0)  # no words at all
    assert 0 <= inst.gold_reward("day", "a b c d e f g h", known) <= 4


def test_known_words_are_the_training_plays_vocabulary():
    from fmbook.data import instructions as inst

    known = inst.known_words()
    assert {"night", "sweet", "father"} <= known
    held_out_only = set(inst.known_words(inst.TEST_PLAYS)) - known
    assert "malvolio" in held_out_only  # a name that only Twelfth Night uses
