"""Fetch the JavaScript that the book serves itself, with Python alone (no Node.js).

The built site loads no script or font from a CDN. Three npm packages, at the versions and with
the sha512 hashes that package-lock.json records, are downloaded from the npm registry as
tarballs, checked against those hashes, and the files the site needs are copied into _vendor/,
which _config.yml's html_extra_path serves from the site root:

  _vendor/widgets/  RequireJS and the ipywidgets HTML manager (widget output)
  _vendor/mathjax/  MathJax 3's tex-mml-chtml component (Sphinx's default component;
                    _config.yml's mathjax_path points at it), its CHTML woff fonts and the TeX
                    extensions it autoloads

Run by scripts/setup; it does nothing when _vendor/ already holds what package-lock.json asks
for. The tarballs are kept in .venv/vendor-tarballs/. To move to newer versions, change
package.json and refresh the lock with npm (``npm install --package-lock-only``), the only step
that needs Node.js, then run this script again.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "_vendor"
TARBALLS = ROOT / ".venv" / "vendor-tarballs"
STAMP = ROOT / ".venv" / ".vendor-stamp"
REGISTRY = "https://registry.npmjs.org"

MATHJAX = "package/es5/"
# package -> [(path in its tarball, or a folder ending in "/"), where it goes under _vendor/)]
FILES = {
    "requirejs": [("package/require.js", "widgets/require.js")],
    "@jupyter-widgets/html-manager": [("package/dist/embed-amd.js", "widgets/embed-amd.js")],
    "mathjax": [
        (MATHJAX + "tex-mml-chtml.js", "mathjax/tex-mml-chtml.js"),
        ("package/LICENSE", "mathjax/LICENSE"),
        (MATHJAX + "output/chtml/fonts/woff-v2/", "mathjax/output/chtml/fonts/woff-v2/"),
        (MATHJAX + "input/tex/extensions/", "mathjax/input/tex/extensions/"),
    ],
}
# loaded only on request, never autoloaded: not served
SKIP = {MATHJAX + "input/tex/extensions/all-packages.js"}


def locked() -> dict[str, dict]:
    """The version and integrity (``sha512-<base64>``) of each package, from package-lock.json."""
    packages = json.loads((ROOT / "package-lock.json").read_text(encoding="utf-8"))["packages"]
    return {name: packages[f"node_modules/{name}"] for name in FILES}


def tarball_url(name: str, version: str) -> str:
    """The npm registry's address of a package's tarball: ``<registry>/<name>/-/<base>-<v>.tgz``."""
    return f"{REGISTRY}/{name}/-/{name.rsplit('/', 1)[-1]}-{version}.tgz"


def check_integrity(data: bytes, integrity: str, what: str) -> None:
    """Raise unless ``data`` has the sha512 that package-lock.json records for it."""
    algorithm, _, digest = integrity.partition("-")
    if algorithm != "sha512":
        raise ValueError(
            f"{what}: expected a sha512 integrity in package-lock.json, got {algorithm}"
        )
    got = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != digest:
        raise ValueError(f"{what}: sha512 {got} does not match package-lock.json's {digest}")


def tarball(name: str, entry: dict) -> bytes:
    """The package's tarball, from .venv/vendor-tarballs/ or the registry, hash-checked."""
    file = TARBALLS / f"{name.replace('/', '+')}-{entry['version']}.tgz"
    if file.exists():
        data = file.read_bytes()
    else:
        url = tarball_url(name, entry["version"])
        print(f"scripts/vendor_js.py: downloading {url}")
        with urllib.request.urlopen(url, timeout=60) as reply:
            data = reply.read()
    check_integrity(data, entry["integrity"], f"{name} {entry['version']}")
    TARBALLS.mkdir(parents=True, exist_ok=True)
    file.write_bytes(data)
    return data


def extract(name: str, data: bytes, into: Path) -> list[str]:
    """Copy the files of ``FILES[name]`` out of the tarball ``data`` into ``into``."""
    written = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        for source, target in FILES[name]:
            if source.endswith("/"):
                pairs = [
                    (m, target + m[len(source) :])
                    for m in members
                    if m.startswith(source) and m not in SKIP
                ]
                if not pairs:
                    raise FileNotFoundError(f"{name}: no files under {source} in its tarball")
            else:
                if source not in members:
                    raise FileNotFoundError(f"{name}: no {source} in its tarball")
                pairs = [(source, target)]
            for member, relative in pairs:
                path = into / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(tar.extractfile(members[member]).read())
                written.append(relative)
    return written


def stamp_text(lock: dict[str, dict]) -> str:
    return json.dumps({name: entry["integrity"] for name, entry in lock.items()}, sort_keys=True)


def main() -> int:
    lock = locked()
    if STAMP.exists() and STAMP.read_text() == stamp_text(lock) and VENDOR.is_dir():
        return 0
    fresh = VENDOR.with_name("_vendor.new")
    shutil.rmtree(fresh, ignore_errors=True)
    count = 0
    for name, entry in lock.items():
        count += len(extract(name, tarball(name, entry), fresh))
    shutil.rmtree(VENDOR, ignore_errors=True)
    fresh.rename(VENDOR)
    STAMP.parent.mkdir(parents=True, exist_ok=True)
    STAMP.write_text(stamp_text(lock))
    versions = ", ".join(f"{name} {entry['version']}" for name, entry in lock.items())
    print(f"scripts/vendor_js.py: {count} files of {versions} in _vendor/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
