"""Open the built book in headless Chromium and check what a reader would see.

    python tests/check_site.py _build/html [--screenshots DIR]

For every page of the table of contents: it loads with no uncaught script
error (the theme's known duplicate ``THEBE_JS_URL`` declaration aside). For
every notebook page: Colab and Binder launch links that point at this
notebook in the repository of ``_config.yml``, figures that are present and
decoded, and scrubbers whose frame changes when the slider moves. Also: the
vendored widget JavaScript is served by the site itself.

Uses Playwright's Python package with Debian's Chromium
(``/usr/bin/chromium``, override with ``CHROMIUM``); never downloads a browser.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.book_config import config, toc_documents  # noqa: E402

KNOWN_ERRORS = ("THEBE_JS_URL",)
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
    checked_scrubbers = 0
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), args=LAUNCH_ARGS
            )
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            for js in ("widgets/require.js", "widgets/embed-amd.js"):
                if page.request.get(f"{base}/{js}").status != 200:
                    problems.append(f"{js}: the vendored widget script is not served by the site")
            for doc in toc_documents():
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
                if screenshots:
                    screenshots.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(screenshots / (doc.replace("/", "_") + ".png")), full_page=True)
                if not (ROOT / f"{doc}.ipynb").exists():
                    continue
                problems += check_notebook_page(page, doc, slug, repo["branch"])
                checked_scrubbers += page.locator(".fmbook-scrubber").count()
            browser.close()
    finally:
        server.shutdown()
    print(f"checked {len(toc_documents())} pages and {checked_scrubbers} scrubbers")
    return problems


def check_notebook_page(page, doc: str, slug: str, branch: str) -> list[str]:
    problems = []
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    colab = f"https://colab.research.google.com/github/{slug}/blob/{branch}/{doc}.ipynb"
    binder = f"https://mybinder.org/v2/gh/{slug}/{branch}?urlpath=tree/{doc}.ipynb"
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("site", type=Path, help="the built HTML folder, e.g. _build/html")
    parser.add_argument("--screenshots", type=Path, default=None)
    args = parser.parse_args()
    if not (args.site / "index.html").exists():
        print(f"check_site: {args.site}/index.html not found; build the book first", file=sys.stderr)
        return 2
    problems = check(args.site, args.screenshots)
    for p in problems:
        print("FAIL", p)
    print("site check:", "ok" if not problems else f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
