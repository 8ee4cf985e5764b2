"""The LLM chapter's head-to-head over training seeds, at the full budget.

The notebook ``book/02_llm/4_bert.ipynb`` compares the zoo's seed-0 models and gives a
bootstrap interval over the test characters. This script retrains both recipes with other
seeds (same configuration otherwise, learning rates from ``fmbook.lm.chosen_lr``) and
prints each seed's accuracies and difference, then the mean and spread over seeds. The
results go to ``fmbook/data/lm_seeds.json``, which the notebook reads beside its own seed 0:

    python benchmarks/bert_vs_gpt_seeds.py --seeds 1 2     # about 4 x 70 s on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--hidden", type=int, default=8192, help="hidden characters of the test plays"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "fmbook" / "data" / "lm_seeds.json")
    args = parser.parse_args()
    os.environ["FMBOOK_BUDGET"] = "full"
    os.environ.setdefault("FMBOOK_HEADLESS", "1")
    sys.path.insert(0, str(ROOT))
    import fmbook
    from fmbook import lm
    from fmbook.metrics import paired_bootstrap

    data, diffs = lm.char_data(), []
    results = {
        "budget": "full",
        "hidden": args.hidden,
        "command": "python benchmarks/bert_vs_gpt_seeds.py",
        "seeds": {},
    }
    for seed in args.seeds:
        models = {}
        for kind, recipe in (("gpt", lm.GPT_RECIPE), ("bert", lm.BERT_RECIPE)):
            config = dict(recipe.config("full"), seed=seed)
            fmbook.seed(seed)
            models[kind] = recipe.build(config)
            recipe.train(models[kind], config)
            models[kind].eval()
        bert_right, gpt_right = lm.head_to_head(
            models["bert"], models["gpt"], data.test_ids, args.hidden
        )
        d = paired_bootstrap(bert_right, gpt_right)
        diffs.append(d.mean)
        results["seeds"][str(seed)] = {
            "bert": round(bert_right.mean().item(), 4),
            "gpt": round(gpt_right.mean().item(), 4),
            "difference": round(d.mean, 4),
            "low": round(d.low, 4),
            "high": round(d.high, 4),
        }
        print(
            f"seed {seed}: BERT {bert_right.mean():.4f}  GPT {gpt_right.mean():.4f}  "
            f"difference {d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]",
            flush=True,
        )
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    if len(diffs) > 1:
        print(
            f"over {len(diffs)} seeds: difference {statistics.mean(diffs):+.4f} "
            f"± {statistics.stdev(diffs):.4f} (sd)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
