r"""Data parallelism with ``torch.distributed``: one model, several processes, one batch shared out.

``torchrun --nproc_per_node=P script.py`` starts ``P`` copies of a script. Each copy, a *rank*
:math:`r \in \{0, \dots, P-1\}`, holds the whole model, computes the mean loss
:math:`\ell_r` on its own :math:`B` examples and its gradient :math:`g_r = \nabla \ell_r`.
``DistributedDataParallel`` (DDP; Li et al. 2020) then averages the gradients with an
all-reduce,

.. math::
    g = \frac{1}{P} \sum_{r=0}^{P-1} g_r
      = \nabla \Big( \frac{1}{PB} \sum_{i=1}^{PB} \ell(x_i) \Big),

the gradient of the mean loss over all :math:`PB` examples, so every rank takes the same
optimizer step as one process with batch :math:`PB` would, up to the order of floating-point
sums. DDP also broadcasts rank 0's parameters when it wraps the model, so every rank starts
from the same weights.

:func:`fmbook.train.fit` uses this module and runs unchanged under ``torchrun``: it wraps the
model with :func:`wrap`, keeps each rank's share of every batch (:func:`shard`), averages the
logged loss over the ranks (:func:`mean`), and only rank 0 evaluates, prints and draws. Every
rank draws the *whole* batch from the same seeded generator and keeps its own slice, so the
data of a run does not depend on how many processes share it, and no data is sent between
processes. Outside ``torchrun`` (or with one process) all of this does nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from fmbook.runtime import device as default_device


def active() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank :math:`r` (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes :math:`P` (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0, the process that logs, evaluates and saves (and outside a group)."""
    return rank() == 0


def start() -> torch.device:
    """Join the process group that ``torchrun`` describes and return this rank's device.

    Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment. The backend is NCCL
    when the book computes on CUDA (each rank on GPU ``LOCAL_RANK``) and gloo on the CPU. Run
    without ``torchrun`` it starts nothing and returns :func:`fmbook.device`.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return default_device()
    base = default_device()
    if base.type == "mps":
        raise RuntimeError("parallel.start: torch.distributed has no backend for Apple's MPS")
    if base.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise RuntimeError(
                f"parallel.start: LOCAL_RANK={local} but only {torch.cuda.device_count()} GPUs"
            )
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return device


def stop() -> None:
    """Leave the process group, if this process is in one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` inside ``DistributedDataParallel`` when :func:`active`, else ``model`` itself.

    The wrapper shares the model's parameters: training through it trains ``model``.
    """
    if not active():
        return model
    first = next(model.parameters(), None)
    on_gpu = first is not None and first.device.type == "cuda"
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[first.device.index] if on_gpu else None
    )


def shard(batch, r: int | None = None, p: int | None = None):
    """Rank ``r``'s share of ``batch``: rows :math:`[rB, (r+1)B)` of every tensor in it.

    ``batch`` is a tensor or a tuple/list/dict of them with the examples along the first
    dimension, :math:`PB` of them. ``r`` and ``p`` default to this process's rank and the world
    size; with one process the batch comes back unchanged.
    """
    r = rank() if r is None else r
    p = world_size() if p is None else p
    if p == 1:
        return batch
    if not 0 <= r < p:
        raise ValueError(f"shard: rank must be in [0, {p}), got {r}")
    if isinstance(batch, torch.Tensor):
        if batch.shape[0] % p:
            raise ValueError(
                f"shard: a batch of {batch.shape[0]} examples cannot be split evenly over "
                f"{p} processes; make the batch size a multiple of {p}"
            )
        size = batch.shape[0] // p
        return batch[r * size : (r + 1) * size]
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard(b, r, p) for b in batch)
    if isinstance(batch, dict):
        return {k: shard(v, r, p) for k, v in batch.items()}
    raise TypeError(
        f"shard: expected a tensor or a tuple, list or dict of tensors, got {type(batch).__name__}"
    )


def mean(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``values`` over all ranks (``values`` itself with one process).

    With equal shares, the mean of the ranks' mean losses is the mean loss of the whole batch.
    """
    if not active():
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / world_size()


def launch(
    script: str | Path,
    nproc: int,
    *args: str,
    threads: int | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> str:
    """Run ``torchrun --standalone --nproc_per_node=nproc script *args`` and return its output.

    Uses this Python's own ``torch.distributed.run`` (the module behind the ``torchrun``
    command), so the processes see the same packages as the caller. ``threads`` sets
    ``OMP_NUM_THREADS`` for each process (torchrun's default is 1); ``env`` adds environment
    variables (``{"FMBOOK_DEVICE": "cpu"}`` keeps every process on the CPU). A failed run
    raises ``RuntimeError`` with the processes' output.
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"launch: nproc must be a positive int, got {nproc!r}")
    script = Path(script)
    if not script.is_file():
        raise FileNotFoundError(f"launch: no script at {script}")
    env = dict(os.environ, **(env or {}))
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(script),
        *map(str, args),
    ]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"launch: torchrun exited with {done.returncode}:\n{output[-4000:]}")
    return done.stdout
