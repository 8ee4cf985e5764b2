"""Open the built book in headless Chromium and check what a reader would see.

    python tests/check_site.py _build/html [--screenshots DIR]

For every page of the table of contents: it loads with no uncaught script
error (the theme's known duplicate ``THEBE_JS_URL`` declaration aside). For
every notebook page: Colab and Binder launch links that point at this
notebook in the repository of ``_config.yml``, figures that are present and
decoded, scrubbers whose frame changes when the slider moves, and code cells
that fit the page without a horizontal scroll bar on a laptop screen. Also: the
vendored widget JavaScript and MathJax are served by the site itself. And beside the
site, the reader copy of every notebook (``notebooks/``): no raw MyST, every solution
folded, every number the page states in the copy's text.

The book must work with no network: every request that leaves the machine
(any URL other than the local server's, ``file:``, ``data:`` or ``blob:``) is
aborted at once and reported by URL, and so is every local request that fails
or answers an HTTP error. On every page with math (Sphinx's ``span.math`` and
``div.math``) MathJax must have typeset each formula (an ``mjx-container``
inside, no raw ``\\(`` or ``\\[`` left) and its fonts must have loaded.

Uses Playwright's Python package with Debian's Chromium
(``/usr/bin/chromium``, override with ``CHROMIUM``); never downloads a browser.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import posixpath
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.book_config import config, reader_branch, toc_documents  # noqa: E402

KNOWN_ERRORS = ("THEBE_JS_URL",)
LOCAL_SCHEMES = ("data:", "blob:", "file:", "about:")
MATHJAX_TIMEOUT_MS = 20_000
VIEWPORT = {"width": 1440, "height": 900}  # a 13-inch laptop screen
# Resolves to the state of the page's math once MathJax has typeset it (or
# says why it could not); CHTML fonts load as the typeset formulas are laid
# out, so it waits for them too.
MATH_STATE = r"""async (timeout) => {
  const math = [...document.querySelectorAll("span.math, div.math")];
  const state = {count: math.length, loaded: false, error: null, raw: [], fonts: []};
  if (!math.length) return state;
  const startup = window.MathJax && window.MathJax.startup;
  if (!startup || !startup.promise) {
    state.error = "MathJax did not load";
  } else {
    state.loaded = true;
    const late = new Promise((_, reject) =>
      setTimeout(() => reject(new Error(`not typeset after ${timeout} ms`)), timeout));
    try {
      await Promise.race([startup.promise, late]);
      document.body.getBoundingClientRect();
      await Promise.race([document.fonts.ready, late]);
    } catch (e) {
      state.error = String(e.message || e);
    }
  }
  state.raw = math
    .filter(e => !e.querySelector("mjx-container") || /\\[(\[]/.test(e.innerText))
    .map(e => e.textContent.trim().slice(0, 60));
  state.fonts = [...document.fonts]
    .filter(f => f.family.replace(/["']/g, "").startsWith("MJX"))
    .map(f => [f.family.replace(/["']/g, ""), f.status]);
  return state;
}"""
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def check(site: Path, screenshots: Path | None) -> list[str]:
    from playwright.sync_api import sync_playwright

    repo = config()["repository"]
    slug = repo["url"].rstrip("/").removeprefix("https://github.com/")
    problems: list[str] = []
    server, base = serve(site)
    checked_scrubbers = checked_math = 0
    current = {"doc": "(before the first page)"}
    offsite: dict[str, list[str]] = {}  # url -> the pages that asked for it

    def only_local(route):
        url = route.request.url
        if url.startswith(base + "/") or url.startswith(LOCAL_SCHEMES):
            route.fallback()
        else:
            offsite.setdefault(url, []).append(current["doc"])
            route.abort("blockedbyclient")

    def failed(request):
        # net::ERR_ABORTED: cancelled by the next navigation, not a failure of the site
        if request.url.startswith(base + "/") and request.failure != "net::ERR_ABORTED":
            problems.append(f"{current['doc']}: request failed: {request.url} ({request.failure})")

    def answered(response):
        if response.url.startswith(base + "/") and response.status >= 400:
            problems.append(f"{current['doc']}: HTTP {response.status} for {response.url}")

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), args=LAUNCH_ARGS
            )
            context = browser.new_context(viewport=VIEWPORT)
            context.route("**/*", only_local)
            page = context.new_page()
            page.on("requestfailed", failed)
            page.on("response", answered)
            mathjax = mathjax_script()
            if mathjax is None:
                problems.append(
                    "_config.yml: mathjax_path does not name a vendored MathJax "
                    "(it loads from a network)"
                )
            for js in ("widgets/require.js", "widgets/embed-amd.js", mathjax):
                if js and page.request.get(f"{base}/{js}").status != 200:
                    problems.append(f"{js}: the vendored script is not served by the site")
            for doc in toc_documents():
                current["doc"] = doc
                errors: list[str] = []
                listener = lambda err, errors=errors: errors.append(str(err))  # noqa: E731
                page.on("pageerror", listener)
                response = page.goto(f"{base}/{doc}.html", wait_until="load")
                page.wait_for_timeout(300)
                page.remove_listener("pageerror", listener)
                if response is None or response.status != 200:
                    problems.append(f"{doc}: HTTP {response.status if response else 'no response'}")
                    continue
                real = [e for e in errors if not any(k in e for k in KNOWN_ERRORS)]
                problems += [f"{doc}: uncaught script error: {e}" for e in real]
                math = check_math(page, doc)
                problems += math
                checked_math += not math and page.locator("span.math, div.math").count() > 0
                if screenshots:
                    screenshots.mkdir(parents=True, exist_ok=True)
                    page.screenshot(
                        path=str(screenshots / (doc.replace("/", "_") + ".png")), full_page=True
                    )
                if not (ROOT / f"{doc}.ipynb").exists():
                    continue
                problems += check_notebook_page(page, doc, slug)
                checked_scrubbers += page.locator(".fmbook-scrubber").count()
            current["doc"] = "(after the last page)"
            browser.close()
    finally:
        server.shutdown()
    for url, docs in offsite.items():
        pages = sorted(set(docs))
        where = ", ".join(pages[:3]) + (f" and {len(pages) - 3} more" if len(pages) > 3 else "")
        problems.append(f"request leaves the machine (blocked): {url} (from {where})")
    print(
        f"checked {len(toc_documents())} pages ({checked_math} with math typeset by MathJax) "
        f"and {checked_scrubbers} scrubbers; {len(offsite)} distinct requests left the machine"
    )
    return problems


def mathjax_script() -> str | None:
    """Site-relative path of the MathJax script that _config.yml's mathjax_path names
    (Sphinx puts a relative path under _static/); None where MathJax comes from a
    network (a URL, or Sphinx's default CDN when mathjax_path is not set)."""
    path = config()["sphinx"]["config"].get("mathjax_path", "")
    if not path or "://" in path or path.startswith("//"):
        return None
    return posixpath.normpath(posixpath.join("_static", path))


def check_math(page, doc: str) -> list[str]:
    """On a page with math: MathJax typeset every formula and its fonts loaded."""
    state = page.evaluate(MATH_STATE, MATHJAX_TIMEOUT_MS)
    if not state["count"]:
        return []
    problems = []
    if state["error"]:
        problems.append(f"{doc}: {state['error']} ({state['count']} formulas)")
    if state["raw"]:
        problems.append(
            f"{doc}: {len(state['raw'])} of {state['count']} formulas not typeset, "
            f"e.g. {state['raw'][0]}"
        )
    if state["loaded"]:
        bad = sorted({family for family, status in state["fonts"] if status == "error"})
        if bad:
            problems.append(f"{doc}: MathJax fonts failed to load: {', '.join(bad)}")
        if not any(status == "loaded" for _, status in state["fonts"]):
            problems.append(f"{doc}: no MathJax font loaded (fonts: {state['fonts']})")
    return problems


def check_notebook_page(page, doc: str, slug: str) -> list[str]:
    problems = []
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    branch, folder = reader_branch()  # the reader copy, not the source
    colab = f"https://colab.research.google.com/github/{slug}/blob/{branch}/{folder}/{doc}.ipynb"
    binder = f"https://mybinder.org/v2/gh/{slug}/{branch}?urlpath=tree/{folder}/{doc}.ipynb"
    for name, url in (("Colab", colab), ("Binder", binder)):
        if url not in hrefs:
            near = [h for h in hrefs if name.lower() in h.lower()]
            problems.append(f"{doc}: no {name} launch link {url} (found {near})")
    images = page.eval_on_selector_all(
        "main img", "els => els.map(e => [e.complete && e.naturalWidth > 0, e.src.slice(0, 40)])"
    )
    if not images:
        problems.append(f"{doc}: a notebook page without figures")
    problems += [f"{doc}: figure not decoded: {src}" for ok, src in images if not ok]
    wide = page.eval_on_selector_all(
        "div.cell_input pre",
        "els => els.filter(e => e.scrollWidth > e.clientWidth + 1)"
        ".map(e => e.textContent.split('\\n').reduce((a, b) => (b.length > a.length ? b : a), ''))",
    )
    width = VIEWPORT["width"]
    problems += [f"{doc}: a code cell scrolls sideways at {width} px: {line[:70]}" for line in wide]
    scrubbers = page.locator(".fmbook-scrubber")
    for i in range(scrubbers.count()):
        scrubber = scrubbers.nth(i)
        visible = "els => els.filter(e => e.style.display !== 'none').map(e => e.dataset.index)"
        before = scrubber.locator(".fmbook-scrubber-frame").evaluate_all(visible)
        slider = scrubber.locator("input[type=range]")
        slider.scroll_into_view_if_needed()
        slider.focus()
        at_end = slider.evaluate("e => +e.value === +e.max")
        page.keyboard.press("ArrowLeft" if at_end else "ArrowRight")
        after = scrubber.locator(".fmbook-scrubber-frame").evaluate_all(visible)
        if len(before) != 1 or len(after) != 1 or before == after:
            problems.append(f"{doc}: scrubber {i} did not change frame ({before} -> {after})")
    return problems


RAW_MYST = ("{glue", "{term}", "{cite", "{numref}", "{ref}", "{doc}", "```{", ":::{")


def check_reader_notebooks(site: Path) -> list[str]:
    """The reader copies beside the site (``<build>/notebooks``, scripts/reader_notebooks.py):
    one per notebook of the table of contents, with no raw MyST, every solution folded, and
    every number the site's page states (myst-nb's ``pasted-text``) in the copy's text."""
    import html
    import re

    import nbformat

    problems = []
    folder = site.parent / "notebooks"
    for doc in toc_documents():
        if not (ROOT / f"{doc}.ipynb").exists():
            continue
        copy = folder / f"{doc}.ipynb"
        if not copy.exists():
            problems.append(f"{doc}: no reader copy {copy}")
            continue
        nb = nbformat.read(copy, as_version=4)
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        problems += [
            f"{doc}: reader copy holds raw MyST {raw!r}" for raw in RAW_MYST if raw in text
        ]
        source = (ROOT / f"{doc}.ipynb").read_text(encoding="utf-8")
        solutions = source.count("{solution}")
        folded = text.count("<details><summary>Solution")
        if folded != solutions:
            problems.append(f"{doc}: {solutions} solutions, {folded} folded in the reader copy")
        page = (site / f"{doc}.html").read_text(encoding="utf-8")
        stated = re.findall(r'<span class="pasted-text">(.*?)</span>', page, re.S)
        missing = sorted(n for n in {html.unescape(n) for n in stated} if n not in text)
        if missing:
            problems.append(
                f"{doc}: numbers on the site missing from the reader copy: {missing[:5]}"
            )
        if any(c.cell_type == "code" and c.outputs for c in nb.cells):
            problems.append(f"{doc}: the reader copy has outputs")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("site", type=Path, help="the built HTML folder, e.g. _build/html")
    parser.add_argument("--screenshots", type=Path, default=None)
    args = parser.parse_args()
    if not (args.site / "index.html").exists():
        print(
            f"check_site: {args.site}/index.html not found; build the book first", file=sys.stderr
        )
        return 2
    problems = check_reader_notebooks(args.site) + check(args.site, args.screenshots)
    for p in problems:
        print("FAIL", p)
    print("site check:", "ok" if not problems else f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
