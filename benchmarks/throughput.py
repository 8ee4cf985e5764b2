"""Training throughput: fmbook's GPT against Hugging Face's GPT2LMHeadModel, same configuration.

    python benchmarks/throughput.py [--layers 4 --heads 4 --width 128 --block 64 --batch 32]
    python benchmarks/throughput.py --precision fp32     # only float32

One training step = forward, backward, AdamW update. The two models are timed
alternately in one process (rounds of ``--steps`` steps, best round kept), on
identical random batches, in float32 and, where the CPU has bf16 matrix instructions
(AMX or AVX-512 BF16), under ``torch.autocast("cpu", dtype=torch.bfloat16)``: both models
in each precision. Reports tokens per second, the ratios (target: fmbook's best at least
1.5x the transformers model's best), and the achieved FLOP/s with the usual estimate of
6 N + 6 L T d FLOPs per token for a training step (Kaplan et al. 2020, C = 6N plus
attention) as a share of this machine's *measured* matrix-product ceiling: the FLOP/s of
a large square matmul in the same precision on the same threads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fmbook.train import cpu_has_bf16  # noqa: E402
from fmbook.transformer import GPT, GPTConfig  # noqa: E402


def matmul_ceiling(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of an ``n`` x ``n`` matrix product in ``dtype`` on this process's threads."""
    a = torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ a
    start = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return 2 * n**3 * repeats / (time.perf_counter() - start)


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
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="auto: fp32, and bf16 too where the CPU has bf16 matrix instructions",
    )
    args = parser.parse_args()

    precisions = {"fp32": [None], "bf16": [torch.bfloat16]}.get(args.precision)
    if precisions is None:
        precisions = [None, torch.bfloat16] if cpu_has_bf16() else [None]
    torch.manual_seed(0)
    cfg = GPTConfig(args.vocab, args.block, args.layers, args.heads, args.width)
    models = {"fmbook": GPT(cfg), "transformers": hf_model(cfg)}
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}
    g = torch.Generator().manual_seed(0)
    batches = [
        torch.randint(args.vocab, (args.batch, args.block + 1), generator=g)
        for _ in range(args.steps)
    ]

    def train_step(name, batch, dtype):
        model, opt = models[name], optimizers[name]
        x, y = batch[:, :-1], batch[:, 1:]
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            if name == "fmbook":
                loss = model(x, y)[1]
            else:  # GPT2LMHeadModel shifts the labels itself: the same T positions go through
                loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    runs = [(name, dtype) for dtype in precisions for name in models]
    for name, dtype in runs:  # warm up
        for batch in batches[:3]:
            train_step(name, batch, dtype)
    best = {run: float("inf") for run in runs}
    for _ in range(args.rounds):
        for run in runs:
            start = time.perf_counter()
            for batch in batches:
                train_step(run[0], batch, run[1])
            best[run] = min(best[run], time.perf_counter() - start)
    rate = {run: args.batch * args.block * args.steps / best[run] for run in runs}
    n = models["fmbook"].num_params()
    flops_per_token = 6 * n + 6 * args.layers * args.block * args.width
    ceiling = {dtype: matmul_ceiling(dtype or torch.float32) for dtype in precisions}
    print(
        f"config: L={args.layers} H={args.heads} d={args.width} T={args.block} B={args.batch} "
        f"V={args.vocab}; {n:,} parameters; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    label = {None: "fp32", torch.bfloat16: "bf16"}
    for dtype in precisions:
        print(f"measured matmul ceiling, {label[dtype]}: {ceiling[dtype] / 1e9:,.0f} GFLOP/s")
    for name, dtype in runs:
        gflops = rate[name, dtype] * flops_per_token / 1e9
        print(
            f"{name:13s} {label[dtype]}  {rate[name, dtype]:>9,.0f} tokens/s  {gflops:6.1f} GFLOP/s"
            f"  {gflops * 1e9 / ceiling[dtype]:6.1%} of the {label[dtype]} matmul ceiling"
        )
    for dtype in precisions:
        ratio = rate["fmbook", dtype] / rate["transformers", dtype]
        print(f"fmbook / transformers, both {label[dtype]}: {ratio:.2f}")
    fastest = {name: max(precisions, key=lambda d: rate[name, d]) for name in models}
    ratio = rate["fmbook", fastest["fmbook"]] / rate["transformers", fastest["transformers"]]
    print(
        f"fmbook's best ({label[fastest['fmbook']]}) / transformers' best "
        f"({label[fastest['transformers']]}) = {ratio:.2f} (target >= 1.5): "
        f"{'ok' if ratio >= 1.5 else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
