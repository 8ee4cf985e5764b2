"""Choose the KL-penalty strength and the number of steps of RL and of DPO on the validation words.

Both methods start from the zoo's ``gpt-instruct`` and learn from the same preferences: RL from the
zoo's ``gpt-reward`` (the reward model of notebook 2, trained on them), DPO from the labelled pairs
themselves (notebook 2's training pairs, rebuilt with ``fmbook.align.sample_pairs`` and
``label_pairs``). Each is trained once per strength beta of its grid, seed 0, for the same number of
steps, with the same learning rate and the same number of sequences per step (64 sampled replies
for RL, 32 pairs for DPO), and measured every ``--every`` steps on prompts about the validation
words: the mean gold reward of one sampled reply per prompt and the mean KL divergence from
``gpt-instruct`` per reply. Best-of-n is measured on the same prompts. The test words, on which
notebook 4 compares the methods, are never read. The measurements go to
``fmbook/data/align_sweep.json``; ``fmbook.align.chosen_alignment`` takes, for a KL budget, the
setting of each method with the highest validation gold reward within it.

    python benchmarks/tune_align.py          # about 13 minutes on 2 cores, zoo models cached
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRIDS = {"rl": (0.01, 0.03, 0.1, 0.3), "dpo": (0.03, 0.1, 0.3, 1.0)}
BEST_OF = (1, 2, 4, 8, 16, 32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "fmbook" / "data" / "align_sweep.json")
    parser.add_argument(
        "--budget",
        choices=("full", "test"),
        default="full",
        help="test: a quick check that it runs",
    )
    args = parser.parse_args()
    os.environ["FMBOOK_BUDGET"] = args.budget
    os.environ.setdefault("FMBOOK_HEADLESS", "1")
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    import fmbook
    from fmbook import align, budget, lm, zoo
    from fmbook.data import instructions as inst

    recipe = align.ALIGN_RECIPE
    steps = budget.pick(test=4, full=recipe["steps"])
    device = fmbook.device()
    sft = zoo.load("gpt-instruct", device=device)
    reward_model = zoo.load("gpt-reward", device=device)
    tokenizer, known = lm.char_data().tokenizer, inst.known_words()
    asked, prompts = align.use_prompts("val", budget.pick(test=10, full=recipe["n_val"]))

    def measure(model, replies=None):
        replies = replies or align.respond(
            model, prompts, tokenizer.encode, tokenizer.decode, 41, greedy=False, seed=99
        )
        gold = [inst.gold_reward(w, y, known) for w, y in zip(asked, replies)]
        kl = align.reply_kl(model, sft, prompts, replies, tokenizer)
        return {"gold": round(float(np.mean(gold)), 4), "kl": round(kl.mean().item(), 4)}

    sweep = {
        "budget": args.budget,
        "recipe": {k: v for k, v in recipe.items()},
        "grids": GRIDS,
        "score": f"mean gold reward and KL from gpt-instruct (nats per reply) of one reply "
        f"sampled per prompt, {len(prompts)} prompts about the validation words",
        "command": "python benchmarks/tune_align.py",
        "methods": {},
    }

    # best of n: n samples per prompt from gpt-instruct, the reward model picks one
    n_max = BEST_OF[-1]
    replies = align.respond(
        sft, [p for p in prompts for _ in range(n_max)], tokenizer.encode, tokenizer.decode,
        41, greedy=False, seed=5,
    )  # fmt: skip
    gold = torch.tensor(
        [inst.gold_reward(w, y, known) for w, y in zip(np.repeat(asked, n_max), replies)]
    ).view(len(prompts), n_max)
    texts = [p + y + "\n" for p, y in zip(np.repeat(prompts, n_max), replies)]
    proxy = align.rewards(reward_model, *align.sequences(texts, tokenizer.encode, inst.BLOCK))
    proxy = proxy.view(len(prompts), n_max)
    sweep["methods"]["best_of_n"] = {
        str(n): {
            "gold": round(gold.gather(1, align.best_of_n(proxy, n)).mean().item(), 4),
            "kl": round(align.best_of_n_kl(n), 4),
        }
        for n in BEST_OF
    }

    data = align.preference_data(sft, "train", tokenizer, known)
    start = measure(sft)
    for method, grid in GRIDS.items():
        sweep["methods"][method] = {}
        for beta in grid:
            policy, measured = copy.deepcopy(sft).train(), []

            def score(model, measured=measured):
                measured.append(measure(model))
                return measured[-1]["gold"]

            common = dict(steps=steps, lr=recipe["lr"], beta=beta, seed=recipe["seed"])
            common.update(eval_fn=score, eval_every=args.every, title=f"{method} beta={beta:g}")
            if method == "rl":
                train_prompts = [f"Use: {w}\n" for w in align.use_words()["train"]]
                history = align.train_rl(
                    policy, sft, reward_model, train_prompts, tokenizer,
                    batch_size=recipe["rl_batch"], **common,
                )  # fmt: skip
            else:
                history = align.train_dpo(
                    policy, sft, data["chosen_tokens"], data["rejected_tokens"],
                    batch_size=recipe["dpo_batch"], **common,
                )  # fmt: skip
            scores = {"0": start} | {str(s): m for s, m in zip(history.eval_step, measured)}
            sweep["methods"][method][f"{beta:g}"] = scores
            print(f"{method} beta={beta:g}: {scores}", flush=True)
            args.out.write_text(json.dumps(sweep, indent=1) + "\n", encoding="utf-8")
    args.out.write_text(json.dumps(sweep, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
