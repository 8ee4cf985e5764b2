"""fmbook.budget: the run budget read from FMBOOK_BUDGET, or given, and the values picked for it."""

import os

import pytest
import torch

from fmbook import budget


@pytest.fixture
def on_cuda(monkeypatch):
    """Pretend the book runs on a CUDA device."""
    monkeypatch.delenv("FMBOOK_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_budget_default_is_full(monkeypatch):
    monkeypatch.delenv("FMBOOK_BUDGET", raising=False)
    assert budget.name() == "full" and not budget.is_test()
    assert budget.pick(test=1, full=2) == 2


def test_budget_test(monkeypatch):
    monkeypatch.setenv("FMBOOK_BUDGET", " Test ")
    assert budget.name() == "test" and budget.is_test()
    assert budget.pick(test=1, full=2, gpu=3) == 1


@pytest.mark.parametrize(("env", "given", "expected"), [("test", "full", 2), ("full", "test", 1)])
def test_another_budget_is_read_without_touching_the_environment(monkeypatch, env, given, expected):
    monkeypatch.setenv("FMBOOK_BUDGET", env)
    before = dict(os.environ)
    assert budget.name(given) == given
    assert budget.pick(test=1, full=2, budget=given) == expected
    assert budget.name() == env and budget.pick(test=1, full=2) == 3 - expected  # still env's
    assert dict(os.environ) == before


def test_gpu_value_only_at_full_budget_on_cuda(monkeypatch, on_cuda):
    monkeypatch.setenv("FMBOOK_BUDGET", "full")
    assert budget.pick(test=1, full=2, gpu=3) == 3
    assert budget.pick(test=1, full=2) == 2  # no gpu value: the full one
    assert budget.pick(test=1, full=2, gpu=3, budget="test") == 1
    monkeypatch.setenv("FMBOOK_DEVICE", "cpu")  # a reader who asks for the CPU gets the CPU's value
    assert budget.pick(test=1, full=2, gpu=3) == 2


@pytest.mark.parametrize("bad", ["fast", ""])
def test_an_unknown_given_budget_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="budget"):
        budget.name(bad)
    with pytest.raises(ValueError, match="budget"):
        budget.pick(test=1, full=2, budget=bad)


def test_budget_unknown_in_the_environment_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("FMBOOK_BUDGET", "fast")
    with pytest.raises(ValueError, match="FMBOOK_BUDGET"):
        budget.name()


def test_pick_needs_both_keywords():
    with pytest.raises(TypeError):
        budget.pick(200, 5000)
    with pytest.raises(TypeError):
        budget.pick(test=200)
