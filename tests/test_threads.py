"""fmbook.threads: the number of CPU threads chosen for the machine's cores and load (no timing
here)."""

from __future__ import annotations

import pytest
import torch

from fmbook import budget, threads, train


@pytest.mark.parametrize(
    ("usable", "physical", "busy", "expected"),
    [
        (2, 2, 0.0, 2),  # quiet 2-core laptop: both cores
        (2, 2, 0.3, 2),  # a browser idling
        (2, 2, 0.6, 1),  # most of a core taken
        (2, 2, 1.0, 1),  # one busy process: one thread, not two that wait for each other
        (2, 2, 2.0, 1),  # never fewer than one
        (2, 2, 5.0, 1),
        (8, 4, 0.0, 4),  # hyper-threads: never more than the physical cores
        (8, 4, 5.0, 3),
        (16, 16, 3.2, 13),
        (1, 1, 0.0, 1),
    ],
)
def test_choose_takes_the_free_cores_between_one_and_the_physical_cores(
    usable, physical, busy, expected
):
    assert threads.choose(usable, physical, busy) == expected


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 2, 0.0), "usable"),
        ((2, 0, 0.0), "physical"),
        ((2.0, 2, 0.0), "usable"),
        ((2, 2, -1.0), "busy"),
        ((2, 2, float("nan")), "busy"),
        ((True, 2, 0.0), "usable"),
    ],
)
def test_choose_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        threads.choose(*args)


STAT = """\
cpu  900 0 300 1800 0 0 0 0 0 0
cpu0 500 0 100 900 50 0 0 0 0 0
cpu1 400 0 200 900 0 0 0 10 0 0
intr 12345
"""


def test_ticks_are_read_per_cpu_that_the_process_may_use():
    assert threads._jiffies([0, 1], STAT) == (1550 + 1510, 950 + 900)  # iowait counts as idle
    assert threads._jiffies([1], STAT) == (1510, 900)  # steal counts as busy, not idle


def test_busy_is_the_other_processes_share_of_the_elapsed_time():
    # two CPUs at 100 ticks/s watched for 1 s: 200 ticks, 100 of them idle: one core busy
    assert threads.busy_from_ticks(
        (0, 0), (200, 100), n_cpus=2, own_seconds=0.0, hz=100
    ) == pytest.approx(1.0)
    # ... and if this process itself used that core, no one else did
    assert threads.busy_from_ticks((0, 0), (200, 100), n_cpus=2, own_seconds=1.0, hz=100) == 0.0
    assert threads.busy_from_ticks(
        (0, 0), (200, 0), n_cpus=2, own_seconds=0.5, hz=100
    ) == pytest.approx(1.5)
    assert threads.busy_from_ticks((5, 5), (5, 5), n_cpus=2, own_seconds=0.0, hz=100) == 0.0


def test_physical_cores_count_hyper_threads_once(tmp_path):
    for cpu, siblings in enumerate(["0,2", "1,3", "0,2", "1,3"]):
        topo = tmp_path / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "thread_siblings_list").write_text(siblings + "\n")
    assert threads.physical_cores([0, 1, 2, 3], sys_root=tmp_path) == 2
    assert threads.physical_cores([0, 2], sys_root=tmp_path) == 1
    assert threads.physical_cores([7, 8], sys_root=tmp_path) == 2  # no topology: each CPU is a core


@pytest.mark.parametrize(("raw", "expected"), [("3", 3), (" 1 ", 1), ("auto", None), ("", None)])
def test_the_reader_can_override_the_choice(monkeypatch, raw, expected):
    monkeypatch.setenv(threads.THREADS_ENV, raw)
    assert threads.override() == expected


@pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5"])
def test_a_bad_override_is_a_clear_error(monkeypatch, raw):
    monkeypatch.setenv(threads.THREADS_ENV, raw)
    with pytest.raises(ValueError, match="FMBOOK_THREADS"):
        threads.override()


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_apply_sets_torch_threads_on_the_cpu_only(monkeypatch, restore_threads):
    monkeypatch.setenv(threads.THREADS_ENV, "1")
    torch.set_num_threads(2)
    choice = threads.apply(torch.device("cpu"))
    assert (
        choice.threads == 1 and choice.source == "FMBOOK_THREADS" and torch.get_num_threads() == 1
    )
    assert threads.last() == choice
    torch.set_num_threads(2)
    assert threads.apply(torch.device("cuda")) is None  # GPUs (and MPS) are left to PyTorch
    assert torch.get_num_threads() == 2


def test_auto_choice_measures_the_load(monkeypatch, restore_threads):
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    monkeypatch.setattr(
        threads, "measure_busy", lambda cpus, window=0.0: float(len(cpus))
    )  # all busy
    choice = threads.apply(torch.device("cpu"))
    assert (
        choice.source == "auto"
        and choice.threads == 1
        and choice.busy == len(threads.usable_cores())
    )
    assert "busy with other work" in choice.describe()


def test_describe_shows_the_choice(monkeypatch, restore_threads):
    monkeypatch.setenv(threads.THREADS_ENV, "1")
    monkeypatch.setenv("FMBOOK_DEVICE", "cpu")
    assert budget.describe().endswith("| threads: 1 (FMBOOK_THREADS)")


@pytest.mark.parametrize(("steps", "calls"), [(train.LONG_RUN_STEPS, 1), (10, 0)])
def test_fit_checks_again_before_a_long_run_only(monkeypatch, steps, calls):
    seen = []
    monkeypatch.setattr(threads, "apply", lambda device=None: seen.append(device))
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.ones(4, 2)
    train.fit(
        model, lambda m, b: m(b).pow(2).mean(), lambda: x, opt, steps, plot=False, progress=False
    )
    assert len(seen) == calls and all(d == torch.device("cpu") for d in seen)
