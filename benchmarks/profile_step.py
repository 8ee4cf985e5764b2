"""Where the time of one training step of the book's GPT goes, on this machine's device.

    python benchmarks/profile_step.py                     # the zoo's gpt-shakespeare, full budget
    python benchmarks/profile_step.py --batch 1024        # a GPU-sized batch
    python benchmarks/profile_step.py --device cpu --autocast bf16

A step has five parts, timed separately over ``--steps`` steps after a warm-up, with the
device synchronised at each boundary so that each part is charged its own work:

* data: drawing a batch of random windows (``fmbook.data.random_windows``) and moving it;
* forward: the model and its loss;
* backward: ``loss.backward()`` and gradient clipping;
* optimizer: the AdamW update;
* host sync: reading the loss as a Python float (``loss.item()``), which makes the host wait
  for the device; ``fmbook.train.fit`` does it once per ``SYNC_EVERY`` steps, not every step.

The sum of the parts is slower than an unsynchronised step (on a GPU the host queues work
ahead); the table also gives that step's time, measured without the boundaries. Then the
ten most expensive operators from ``torch.profiler``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fmbook import lm, threads, train  # noqa: E402
from fmbook.data import random_windows  # noqa: E402
from fmbook.runtime import device as book_device  # noqa: E402
from fmbook.runtime import synchronize  # noqa: E402

PARTS = ("data", "forward", "backward", "optimizer", "host sync")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the book's)")
    parser.add_argument("--batch", type=int, default=None, help="default: the recipe's batch")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--autocast", choices=list(DTYPES), default="fp32")
    parser.add_argument("--fused", action="store_true", help="fused AdamW (CUDA, recent CPUs)")
    args = parser.parse_args()

    device = book_device(args.device)
    choice = threads.apply(device)
    config = lm.gpt_config("full")
    B = args.batch or config["batch_size"]
    T = config["block_size"]
    torch.manual_seed(0)
    model = lm.build_gpt(config).to(device)
    options = {"fused": True} if args.fused else {"fused": False}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, **options)
    dtype = DTYPES[args.autocast]
    ids, g = lm.char_data().train_ids, torch.Generator().manual_seed(0)

    def step(clock: dict | None) -> None:
        def mark(part: str, t0: float) -> float:
            if clock is None:
                return t0
            synchronize(device)
            now = time.perf_counter()
            clock[part] += now - t0
            return now

        t = time.perf_counter()
        x, y = random_windows(ids, T, B, g, device)
        t = mark("data", t)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(x, y)[1]
        t = mark("forward", t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        t = mark("backward", t)
        optimizer.step()
        t = mark("optimizer", t)
        if clock is not None:
            loss.item()
            mark("host sync", t)

    for _ in range(5):
        step({p: 0.0 for p in PARTS})
    clock = {p: 0.0 for p in PARTS}
    for _ in range(args.steps):
        step(clock)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step(None)
    synchronize(device)
    free = (time.perf_counter() - start) / args.steps

    total = sum(clock.values()) / args.steps
    how = f", {choice.describe()}" if choice is not None else ""
    print(
        f"GPT {config['n_layer']}x{config['n_embd']}, block {T}, batch {B}, {args.autocast}, "
        f"AdamW {'fused' if args.fused else 'default'}; {device}{how}; torch {torch.__version__}"
    )
    print(f"{'part':10s} {'ms/step':>8s} {'share':>6s}")
    for part in PARTS:
        ms = clock[part] / args.steps * 1e3
        print(f"{part:10s} {ms:8.2f} {ms / (total * 1e3):6.1%}")
    print(f"{'sum':10s} {total * 1e3:8.2f}")
    print(
        f"unsynchronised step: {free * 1e3:.2f} ms = {B * T / free:,.0f} tokens/s "
        f"(fmbook.train.fit reads the loss once per {train.SYNC_EVERY} steps)"
    )

    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(5):
            step(None)
        synchronize(device)
    key = "cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=10, max_name_column_width=40))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
