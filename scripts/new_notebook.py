"""Write a notebook from a list of (kind, source) cells, stored without outputs.

Used by chapter authors to start a notebook: ``python scripts/new_notebook.py spec.py out.ipynb``
where ``spec.py`` defines ``CELLS = [("md", "..."), ("code", "..."), ...]``.
The Colab/Binder set-up cell is inserted after the title, from ``_config.yml``.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts.book_config import setup_cell_source  # noqa: E402


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    out = []
    for i, (kind, source) in enumerate(cells):
        source = source.strip("\n")
        if kind == "md":
            out.append(nbformat.v4.new_markdown_cell(source))
        elif kind == "code":
            out.append(nbformat.v4.new_code_cell(source))
        else:
            raise ValueError(f"cell {i}: kind must be 'md' or 'code', got {kind!r}")
        if i == 0:
            setup = nbformat.v4.new_code_cell(setup_cell_source())
            setup.metadata["tags"] = ["remove-cell"]
            out.append(setup)
    for j, cell in enumerate(out):
        cell["id"] = f"cell-{j:02d}"
    nb.cells = out
    return nb


if __name__ == "__main__":
    spec, target = sys.argv[1], sys.argv[2]
    nbformat.write(build(runpy.run_path(spec)["CELLS"]), target)
    print(f"wrote {target}")
