"""Write the reference machine's measurements into the ``.claims.toml`` files.

A measurement of the machine (``fmbook.claims.measure``) is shown beside its value on the
book's reference machine (2 CPU cores). Those reference values are never typed by hand:
run the notebooks on the reference machine, then copy what they recorded::

    FMBOOK_CLAIMS_DIR=/tmp/ref bash scripts/build-book          # or benchmarks/run_notebooks.py
    python benchmarks/update_references.py /tmp/ref --budget full

For every ``kind = "machine"`` entry of every notebook, the value recorded in
``<claims dir>/<notebook>.<budget>.json`` becomes ``reference = ...`` of that budget's line
(three significant digits); targets (``min``/``max``) are kept. Notebooks without a record
are left alone and listed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def set_reference(text: str, claim: str, budget: str, value: float) -> str:
    """``text`` of a claims file with ``reference = value`` in ``[claim]``'s ``budget`` line."""
    section = re.search(rf"^\[{re.escape(claim)}\]\n(?:(?!\[).*\n?)*", text, flags=re.M)
    if section is None:
        raise KeyError(f"no [{claim}] table")
    body = section.group(0)
    line = re.search(rf"^{budget} = \{{(.*)\}}[ \t]*$", body, flags=re.M)
    if line is None:
        raise KeyError(f"[{claim}] has no {budget} line")
    keys = [
        k.strip()
        for k in line.group(1).split(",")
        if k.strip() and not k.strip().startswith("reference")
    ]
    entry = ", ".join([f"reference = {value:.3g}", *keys])
    new_body = body[: line.start()] + f"{budget} = {{ {entry} }}" + body[line.end() :]
    return text[: section.start()] + new_body + text[section.end() :]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "claims_dir", type=Path, help="folder with <notebook>.<budget>.json records"
    )
    parser.add_argument("--budget", default="full", choices=["test", "full"])
    args = parser.parse_args()

    from fmbook.claims import load_specs
    from scripts.book_config import notebooks

    missing = []
    for nb in notebooks():
        file = nb.with_name(f"{nb.stem}.claims.toml")
        machine = [n for n, s in load_specs(file, args.budget).items() if s.kind == "machine"]
        if not machine:
            continue
        record = args.claims_dir / f"{nb.stem}.{args.budget}.json"
        if not record.exists():
            missing.append(nb.stem)
            continue
        doc = json.loads(record.read_text(encoding="utf-8"))
        text = file.read_text(encoding="utf-8")
        for name in machine:
            if name not in doc["claims"]:
                missing.append(f"{nb.stem}.{name}")
                continue
            value = doc["claims"][name]["value"]
            text = set_reference(text, name, args.budget, value)
            print(f"{nb.stem:<22} {name:<22} reference = {value:.3g} {doc['claims'][name]['unit']}")
        file.write_text(text, encoding="utf-8")
    if missing:
        print(f"no record (left as they were): {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
