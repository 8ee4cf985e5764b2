"""Generation speed: the key/value cache against recomputing the whole context.

    python benchmarks/generation.py [--new-tokens 500] [--repeats 3]

A GPT of the book's size (4 layers, 4 heads, 128 wide) with a context long
enough for the prompt and all new tokens (so that both methods generate the
same tokens) produces ``--new-tokens`` tokens greedily, with and without the
cache, alternating; the best time of each is reported. Target: the cache at
least 5x faster for 500 tokens.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fmbook.transformer import GPT, GPTConfig  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--new-tokens", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    prompt_len = 16
    model = GPT(
        GPTConfig(
            vocab_size=76, block_size=prompt_len + args.new_tokens, n_layer=4, n_head=4, n_embd=128
        )
    )
    model.eval()
    prompt = torch.randint(76, (1, prompt_len))
    times = {True: [], False: []}
    outputs = {}
    for _ in range(args.repeats):
        for use_cache in (True, False):
            start = time.perf_counter()
            outputs[use_cache] = model.generate(
                prompt, args.new_tokens, top_k=1, use_cache=use_cache
            )
            times[use_cache].append(time.perf_counter() - start)
    same = torch.equal(outputs[True], outputs[False])
    cached, plain = min(times[True]), min(times[False])
    print(
        f"{args.new_tokens} new tokens, context up to {prompt_len + args.new_tokens}: "
        f"recompute {plain:.2f} s, cache {cached:.2f} s, "
        f"speed-up {plain / cached:.1f}x (target >= 5x); "
        f"identical tokens: {same}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
