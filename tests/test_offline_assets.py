"""The built book loads no script or font from a network: the JavaScript that
_config.yml names is vendored by scripts/vendor_js.py (npm packages, fetched with Python
alone and checked against package-lock.json's hashes) into _vendor/, which html_extra_path
serves from the site root. Fast, no build, no browser; tests/check_site.py checks the built
site itself.
"""

import base64
import hashlib
import io
import json
import posixpath
import re
import subprocess
import tarfile

import pytest

from scripts import vendor_js
from scripts.book_config import ROOT, config
from tests.check_site import mathjax_script

VENDOR = ROOT / "_vendor"
TARGETS = {target for files in vendor_js.FILES.values() for _, target in files}


@pytest.fixture
def vendor():
    """_vendor/, which scripts/setup (run by scripts/test) fills from npm."""
    assert VENDOR.is_dir(), "_vendor/ is missing: run bash scripts/setup (scripts/vendor_js.py)"
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
    # scripts/vendor_js.py copies MathJax's component of that name, and its CHTML fonts
    assert site in TARGETS, f"scripts/vendor_js.py does not copy {site}"
    assert "mathjax/output/chtml/fonts/woff-v2/" in TARGETS, (
        "scripts/vendor_js.py does not copy MathJax's CHTML fonts"
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
        assert site_path(path) in TARGETS, f"scripts/vendor_js.py does not copy {path}"


def test_vendored_files_exist(vendor):
    paths = [vendored_mathjax()] + [site_path(p) for p in sphinx_config()["nb_ipywidgets_js"]]
    for path in paths:
        assert (vendor / path).is_file(), f"_vendor/{path} is missing: run bash scripts/setup"


def test_vendored_mathjax_has_its_version_and_every_font_it_asks_for(vendor):
    script = vendor / vendored_mathjax()
    text = script.read_text(encoding="utf-8")
    wanted = json.loads((ROOT / "package.json").read_text())["dependencies"]["mathjax"]
    assert f'VERSION="{wanted}"' in text, (
        f"{script} is not MathJax {wanted}: run bash scripts/setup"
    )
    fonts = script.parent / "output" / "chtml" / "fonts" / "woff-v2"
    asked = set(re.findall(r"MathJax_[A-Za-z0-9-]+\.woff", text))
    assert asked, "the MathJax component names no woff font: is it the CHTML output?"
    missing = sorted(f for f in asked if not (fonts / f).is_file())
    assert not missing, f"fonts missing from {fonts}: {missing}"


def test_the_packages_are_fetched_at_the_locked_version_with_their_hash():
    lock = vendor_js.locked()
    assert set(lock) == {"requirejs", "@jupyter-widgets/html-manager", "mathjax"}
    assert all(entry["integrity"].startswith("sha512-") for entry in lock.values())
    assert vendor_js.tarball_url("@jupyter-widgets/html-manager", "1.0.15") == (
        "https://registry.npmjs.org/@jupyter-widgets/html-manager/-/html-manager-1.0.15.tgz"
    )


def test_a_tarball_that_does_not_match_its_hash_is_refused():
    data = b"the real tarball"
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    vendor_js.check_integrity(data, integrity, "demo")
    with pytest.raises(ValueError, match="does not match package-lock.json"):
        vendor_js.check_integrity(data + b"!", integrity, "demo")
    with pytest.raises(ValueError, match="sha512"):
        vendor_js.check_integrity(data, "sha1-abc", "demo")


def test_extract_copies_the_named_files_and_folders_only(tmp_path):
    files = {
        "package/es5/tex-mml-chtml.js": b"MathJax",
        "package/LICENSE": b"Apache",
        "package/es5/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff": b"font",
        "package/es5/input/tex/extensions/ams.js": b"ams",
        "package/es5/input/tex/extensions/all-packages.js": b"everything",
        "package/es5/tex-svg.js": b"not served",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    written = vendor_js.extract("mathjax", buffer.getvalue(), tmp_path)
    assert sorted(written) == [
        "mathjax/LICENSE",
        "mathjax/input/tex/extensions/ams.js",
        "mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff",
        "mathjax/tex-mml-chtml.js",
    ]
    assert (tmp_path / "mathjax/tex-mml-chtml.js").read_bytes() == b"MathJax"


def test_setup_refuses_a_python_that_is_too_old_in_one_line_before_installing(tmp_path):
    old = tmp_path / "python3.10"  # answers like Python 3.10 would
    old.write_text(
        '#!/bin/sh\nif [ "$1" = "-V" ]; then echo "Python 3.10.14"; exit 0; fi\nexit 1\n'
    )
    old.chmod(0o755)
    for python, says in ((old, "Python 3.10.14"), (tmp_path / "missing", "not found")):
        out = subprocess.run(
            ["bash", str(ROOT / "scripts" / "setup")],
            env={"PATH": "/usr/bin:/bin", "PYTHON": str(python)},
            capture_output=True,
            text=True,
        )
        assert out.returncode == 1 and out.stdout == ""
        lines = out.stderr.splitlines()
        assert len(lines) == 1 and "needs Python 3.11 or newer" in lines[0] and says in lines[0]
