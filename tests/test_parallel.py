"""fmbook.parallel and fmbook.train.fit under torchrun: sharding, and a real 2-process gloo job
whose losses equal those of one process with the whole batch."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from fmbook import device, parallel, threads, train

JOB = textwrap.dedent(
    """
    import json, sys
    import torch
    from fmbook import parallel, train
    from fmbook.transformer import GPT, GPTConfig

    out, steps, batch_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    device = parallel.start()
    torch.manual_seed(parallel.rank())  # different weights per rank: DDP must broadcast rank 0's
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16))
    model = model.to(device)
    optimizer = train.adamw(model.parameters(), device, lr=1e-2)
    g = torch.Generator().manual_seed(1)

    def batches():
        x = torch.randint(0, 11, (batch_size, 9), generator=g)
        return x[:, :-1], x[:, 1:]

    history = train.fit(
        model, lambda m, b: m(*b)[1], batches, optimizer, steps, grad_clip=1.0, plot=False,
        eval_fn=lambda m: 1.0, eval_every=5,
    )
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    record = {"loss": history.train_loss, "evals": history.eval_step, "params": flat.tolist(),
              "world": parallel.world_size(), "threads": torch.get_num_threads()}
    with open(f"{out}.{parallel.rank()}.json", "w") as f:
        json.dump(record, f)
    parallel.stop()
    """
)


def test_shard_splits_every_tensor_along_the_batch():
    x, y = torch.arange(12).reshape(6, 2), torch.arange(6)
    first, second = parallel.shard((x, y), 0, 2), parallel.shard((x, y), 1, 2)
    assert isinstance(first, tuple)
    torch.testing.assert_close(torch.cat([first[0], second[0]]), x)
    torch.testing.assert_close(second[1], torch.tensor([3, 4, 5]))
    assert parallel.shard({"a": y}, 2, 3)["a"].tolist() == [4, 5]
    assert parallel.shard([y], 0, 1)[0] is y  # one process: unchanged


def test_shard_rejects_uneven_batches_and_unknown_types():
    with pytest.raises(ValueError, match="multiple of 4"):
        parallel.shard(torch.zeros(6, 3), 0, 4)
    with pytest.raises(ValueError, match="rank"):
        parallel.shard(torch.zeros(4), 2, 2)
    with pytest.raises(TypeError, match="str"):
        parallel.shard("text", 0, 2)


def test_outside_torchrun_everything_is_one_process(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert (parallel.rank(), parallel.world_size(), parallel.is_main()) == (0, 1, True)
    assert not parallel.active()
    model = torch.nn.Linear(2, 2)
    assert parallel.wrap(model) is model
    values = torch.tensor([1.0, 2.0])
    assert parallel.mean(values) is values
    assert parallel.start() == device()  # no process group to join


def test_launch_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="nproc"):
        parallel.launch(tmp_path / "x.py", 0)
    with pytest.raises(FileNotFoundError, match="no script"):
        parallel.launch(tmp_path / "missing.py", 2)
    failing = tmp_path / "fail.py"
    failing.write_text("raise SystemExit(3)\n")
    with pytest.raises(RuntimeError, match="exited"):
        parallel.launch(failing, 1)


def test_threads_under_torchrun_take_omp_num_threads_or_a_share(monkeypatch):
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    choice = threads.decide()
    assert (choice.threads, choice.source) == (1, "torchrun")
    monkeypatch.delenv("OMP_NUM_THREADS")
    cap = min(len(threads.usable_cores()), threads.physical_cores(threads.usable_cores()))
    assert threads.decide().threads == max(1, cap // 2)


def test_two_gloo_processes_with_batch_b_train_like_one_with_batch_2b(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    out = parallel.launch(script, 2, tmp_path / "two", 12, 16)
    parallel.launch(script, 1, tmp_path / "one", 12, 16)
    two = [json.loads((tmp_path / f"two.{r}.json").read_text()) for r in (0, 1)]
    one = json.loads((tmp_path / "one.0.json").read_text())
    assert [t["world"] for t in two] == [2, 2] and one["world"] == 1
    assert [t["threads"] for t in two] == [1, 1]  # torchrun's OMP_NUM_THREADS=1 is kept
    # the logged loss is the mean over both processes, the same on each
    assert two[0]["loss"] == two[1]["loss"]
    # one process with the whole batch: the same losses, up to the order of float sums
    torch.testing.assert_close(
        torch.tensor(two[0]["loss"]), torch.tensor(one["loss"]), rtol=1e-5, atol=1e-6
    )
    # DDP broadcast rank 0's weights and averaged the gradients: both ranks hold the same model
    assert two[0]["params"] == two[1]["params"]
    torch.testing.assert_close(
        torch.tensor(two[0]["params"]), torch.tensor(one["params"]), rtol=0, atol=1e-3
    )
    # only rank 0 evaluates and prints
    assert two[0]["evals"] == [5, 10, 12] and two[1]["evals"] == []
    assert out.count("steps in") == 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fit_under_autocast_on_the_cpu_learns(dtype):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 1, generator=g)

    def batch():
        x = torch.randn(64, 8, generator=g)
        return x, x @ w

    def loss(m, b):
        return torch.nn.functional.mse_loss(m(b[0]).float(), b[1])

    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    history = train.fit(model, loss, batch, opt, 200, autocast=dtype, plot=False)
    assert history.last_train_loss(20) < 0.05 * history.train_loss[0]
    with pytest.raises(ValueError, match="autocast"):
        train.fit(model, loss, batch, opt, 1, autocast=torch.float64, plot=False)


def test_mixed_precision_and_adamw_leave_the_cpu_in_float32():
    assert train.mixed_precision("cpu") is None
    opt = train.adamw([torch.nn.Parameter(torch.zeros(2))], "cpu", lr=0.1)
    assert not opt.defaults.get("fused")
