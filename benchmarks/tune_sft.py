"""Choose the learning rate and the number of steps of instruction tuning on the tuning plays.

Full finetuning and LoRA of the book's GPT (``gpt-shakespeare``, full budget) are each trained once
per learning rate of the same grid, seed 0, at a constant rate, and scored every ``--every`` steps
by the mean over the tasks of the share of tuning-plays instructions they follow (greedy replies,
``fmbook.data.instructions.follows``). Both methods get the same grid, the same steps and the same
batches, so they get the same care. The test plays, on which the alignment chapter compares
them, are never read. The scores go to ``fmbook/data/sft_sweep.json``; ``fmbook.align.chosen_sft``
takes the best of each method.

    python benchmarks/tune_sft.py          # about 9 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRID = (1e-3, 3e-3, 1e-2, 3e-2)
STEPS, EVERY = 1000, 125


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", type=float, nargs="+", default=list(GRID))
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--every", type=int, default=EVERY)
    parser.add_argument("--out", type=Path, default=ROOT / "fmbook" / "data" / "sft_sweep.json")
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

    import fmbook
    from fmbook import adapt, align, lm, zoo
    from fmbook.data import instructions as inst

    recipe = align.SFT_RECIPE
    data = inst.splits(recipe["n_train"], recipe["n_val"], 1)
    tokenizer = lm.char_data().tokenizer
    pad_id = tokenizer.encode(" ")[0]
    pairs = [(e.prompt, e.response) for e in data.train]
    inputs, targets = align.sft_tensors(pairs, tokenizer.encode, inst.BLOCK, pad_id)
    device = fmbook.device()
    gpt = zoo.load("gpt-shakespeare", device=device)

    def val_score(model):
        replies = align.respond(
            model,
            [e.prompt for e in data.val],
            tokenizer.encode,
            tokenizer.decode,
            recipe["max_new_tokens"],
        )
        hits = np.array([inst.follows(e, r) for e, r in zip(data.val, replies)])
        tasks = np.array([e.task for e in data.val])
        return float(np.mean([hits[tasks == task].mean() for task in inst.TASKS]))

    sweep = {
        "budget": args.budget,
        "seed": recipe["seed"],
        "grid": args.grid,
        "score": "mean over tasks of the share of tuning-plays instructions followed, greedy, "
        f"{recipe['n_val']} per task from " + ", ".join(inst.TUNING_PLAYS),
        "command": "python benchmarks/tune_sft.py",
        "methods": {},
    }
    for method in ("full", "lora"):
        sweep["methods"][method] = {}
        for lr in args.grid:
            model = copy.deepcopy(gpt)
            if method == "lora":
                adapt.add_lora(model, recipe["lora_targets"], rank=recipe["lora_rank"])
            history = align.train_sft(
                model,
                inputs,
                targets,
                steps=args.steps,
                lr=lr,
                batch_size=recipe["batch_size"],
                seed=recipe["seed"],
                eval_fn=val_score,
                eval_every=args.every,
                title=f"{method} lr={lr:g}",
            )
            scores = {str(s): round(v, 4) for s, v in zip(history.eval_step, history.eval_loss)}
            sweep["methods"][method][f"{lr:g}"] = scores
            print(f"{method} lr={lr:g} ({history.seconds:.0f} s): {scores}", flush=True)
            args.out.write_text(json.dumps(sweep, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
