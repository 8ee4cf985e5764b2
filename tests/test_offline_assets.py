"""The built book loads no script or font from a network: the JavaScript that
_config.yml names is vendored by scripts/vendor-js (from npm) into _vendor/,
which html_extra_path serves from the site root. Fast, no build, no browser;
tests/check_site.py checks the built site itself.
"""

import json
import posixpath
import re

import pytest

from scripts.book_config import ROOT, config
from tests.check_site import mathjax_script

VENDOR = ROOT / "_vendor"
VENDOR_JS = (ROOT / "scripts" / "vendor-js").read_text(encoding="utf-8")


@pytest.fixture
def vendor():
    """_vendor/, which scripts/setup (run by scripts/test) fills from npm."""
    assert VENDOR.is_dir(), "_vendor/ is missing: run bash scripts/setup (scripts/vendor-js)"
    return VENDOR


def sphinx_config() -> dict:
    return config()["sphinx"]["config"]


def site_path(path: str) -> str:
    """Where a JavaScript path given to Sphinx lands in the site (Sphinx puts it under _static/)."""
    return posixpath.normpath(posixpath.join("_static", path))


def vendored_mathjax() -> str:
    site = mathjax_script()
    assert site is not None, (
        "mathjax_path must name the vendored MathJax (Sphinx's default is a CDN)"
    )
    return site


def test_mathjax_path_names_a_vendored_file():
    site = vendored_mathjax()
    assert not site.startswith(("..", "_static/")), (
        f"{site} is not served from _vendor/ at the site root"
    )
    assert "_vendor" in sphinx_config()["html_extra_path"]
    directory, name = posixpath.split(site)
    # scripts/vendor-js copies MathJax's component of that name into _vendor/<directory>/.
    assert f"_vendor/{directory}" in VENDOR_JS
    assert f"/{name} " in VENDOR_JS, f"scripts/vendor-js does not copy {name}"
    assert "output/chtml/fonts/woff-v2" in VENDOR_JS, (
        "scripts/vendor-js does not copy MathJax's CHTML fonts"
    )


def test_mathjax_is_pinned_to_a_version_3():
    wanted = json.loads((ROOT / "package.json").read_text())["dependencies"]["mathjax"]
    locked = json.loads((ROOT / "package-lock.json").read_text())["packages"][
        "node_modules/mathjax"
    ]["version"]
    assert re.fullmatch(r"3\.\d+\.\d+", wanted), (
        f"pin MathJax 3 exactly (sphinx.ext.mathjax's default), not {wanted}"
    )
    assert locked == wanted


def test_widget_scripts_are_local():
    for path in sphinx_config()["nb_ipywidgets_js"]:
        assert "://" not in path and not path.startswith("//"), f"{path} loads from a network"
        assert posixpath.basename(path) in VENDOR_JS


def test_vendored_files_exist(vendor):
    paths = [vendored_mathjax()] + [site_path(p) for p in sphinx_config()["nb_ipywidgets_js"]]
    for path in paths:
        assert (vendor / path).is_file(), f"_vendor/{path} is missing: run bash scripts/vendor-js"


def test_vendored_mathjax_has_its_version_and_every_font_it_asks_for(vendor):
    script = vendor / vendored_mathjax()
    text = script.read_text(encoding="utf-8")
    wanted = json.loads((ROOT / "package.json").read_text())["dependencies"]["mathjax"]
    assert f'VERSION="{wanted}"' in text, (
        f"{script} is not MathJax {wanted}: run bash scripts/vendor-js"
    )
    fonts = script.parent / "output" / "chtml" / "fonts" / "woff-v2"
    asked = set(re.findall(r"MathJax_[A-Za-z0-9-]+\.woff", text))
    assert asked, "the MathJax component names no woff font: is it the CHTML output?"
    missing = sorted(f for f in asked if not (fonts / f).is_file())
    assert not missing, f"fonts missing from {fonts}: {missing}"
