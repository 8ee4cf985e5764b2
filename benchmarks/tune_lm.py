"""Choose the learning rates of ``gpt-shakespeare`` and ``bert-shakespeare`` on the tuning plays.

Both models are trained at the full budget, seed 0, once per learning rate of the same grid,
and each is scored by its own objective on the tuning plays (``fmbook.lm.tuning_loss``: the
next-token loss for the GPT, the masked-token loss for BERT). The test plays, on which the
LLM chapter compares the two, are never read. The losses go to ``fmbook/data/lm_lr_sweep.json``;
``fmbook.lm.chosen_lr`` takes the lowest of each model.

    python benchmarks/tune_lm.py                       # about 8 x 70 s on 2 cores
    python benchmarks/tune_lm.py --grid 0.016 --merge  # one more rate for both models
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRID = (1e-3, 2e-3, 4e-3, 8e-3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", type=float, nargs="+", default=list(GRID))
    parser.add_argument("--out", type=Path, default=ROOT / "fmbook" / "data" / "lm_lr_sweep.json")
    parser.add_argument(
        "--merge", action="store_true", help="add the grid's points to the results already in --out"
    )
    args = parser.parse_args()
    os.environ["FMBOOK_BUDGET"] = "full"
    os.environ.setdefault("FMBOOK_HEADLESS", "1")
    sys.path.insert(0, str(ROOT))
    import fmbook
    from fmbook import lm

    sweep = {
        "budget": "full",
        "seed": 0,
        "grid": [],
        "score": "each model's own loss on the tuning plays " + ", ".join(lm.TUNING_PLAYS),
        "command": "python benchmarks/tune_lm.py",
        "gpt": {},
        "bert": {},
    }
    if args.merge and args.out.exists():
        sweep = json.loads(args.out.read_text(encoding="utf-8"))
    sweep["grid"] = sorted(set(sweep["grid"]) | set(args.grid))
    for kind, recipe in (("gpt", lm.GPT_RECIPE), ("bert", lm.BERT_RECIPE)):
        for lr in args.grid:
            config = dict(recipe.config("full"), lr=lr)
            fmbook.seed(config["seed"])
            model = recipe.build(config)
            recipe.train(model, config)
            sweep[kind][f"{lr:g}"] = round(lm.tuning_loss(kind, model.eval()), 5)
            print(f"{kind} lr={lr:g}: tuning loss {sweep[kind][f'{lr:g}']:.4f}", flush=True)
        sweep[kind] = dict(sorted(sweep[kind].items(), key=lambda kv: float(kv[0])))
    args.out.write_text(json.dumps(sweep, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
