"""Training throughput: fmbook's GPT against Hugging Face's GPT2LMHeadModel, same configuration.

    python benchmarks/throughput.py [--layers 4 --heads 4 --width 128 --block 64 --batch 32]

One training step = forward, backward, AdamW update. The two models are timed
alternately in one process (rounds of ``--steps`` steps, best round kept), on
identical random batches. Reports tokens per second, the ratio (target: fmbook
at least as fast, ratio >= 1.0), the achieved FLOP/s with the usual estimate of
6 N + 6 L T d FLOPs per token for a training step (Kaplan et al. 2020, C = 6N
plus attention), and its fraction of this CPU's fp32 peak: cores x clock x
FLOPs per cycle (32 for two 256-bit FMA pipes, as on AMD Zen 4 and most
AVX2/AVX-512 server cores; override with ``--peak-gflops``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fmbook.transformer import GPT, GPTConfig  # noqa: E402


def cpu_peak_gflops(flops_per_cycle: int = 32) -> tuple[float, str]:
    mhz = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                mhz = float(line.split(":")[1])
                break
    except OSError:
        pass
    cores = torch.get_num_threads()
    if mhz is None:
        return float("nan"), "clock unknown"
    return (
        cores * mhz / 1000 * flops_per_cycle,
        f"{cores} cores x {mhz / 1000:.2f} GHz x {flops_per_cycle} FLOP/cycle",
    )


def hf_model(cfg: GPTConfig):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.block_size,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        use_cache=False,
    )
    return GPT2LMHeadModel(config)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=76)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--peak-gflops", type=float, default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    cfg = GPTConfig(args.vocab, args.block, args.layers, args.heads, args.width)
    models = {"fmbook": GPT(cfg), "transformers": hf_model(cfg)}
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}
    g = torch.Generator().manual_seed(0)
    batches = [
        torch.randint(args.vocab, (args.batch, args.block + 1), generator=g)
        for _ in range(args.steps)
    ]

    def train_step(name, batch):
        model, opt = models[name], optimizers[name]
        x, y = batch[:, :-1], batch[:, 1:]
        if name == "fmbook":
            loss = model(x, y)[1]
        else:  # GPT2LMHeadModel shifts the labels itself: the same T positions go through the model
            loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for name in models:  # warm up
        for batch in batches[:3]:
            train_step(name, batch)
    best = {name: float("inf") for name in models}
    for _ in range(args.rounds):
        for name in models:
            start = time.perf_counter()
            for batch in batches:
                train_step(name, batch)
            best[name] = min(best[name], time.perf_counter() - start)
    rate = {name: args.batch * args.block * args.steps / best[name] for name in models}
    n = models["fmbook"].num_params()
    flops_per_token = 6 * n + 6 * args.layers * args.block * args.width
    peak, how = (args.peak_gflops, "given") if args.peak_gflops else cpu_peak_gflops()
    print(
        f"config: L={args.layers} H={args.heads} d={args.width} T={args.block} B={args.batch} "
        f"V={args.vocab}; {n:,} parameters; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    for name in models:
        gflops = rate[name] * flops_per_token / 1e9
        print(
            f"{name:13s} {rate[name]:>9,.0f} tokens/s  {gflops:6.1f} GFLOP/s  "
            f"{gflops / peak:6.1%} of fp32 peak ({peak:.0f} GFLOP/s: {how})"
        )
    ratio = rate["fmbook"] / rate["transformers"]
    print(
        f"fmbook / transformers = {ratio:.2f} (target >= 1.0): {'ok' if ratio >= 1.0 else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
