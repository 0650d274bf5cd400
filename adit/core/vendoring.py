"""Copy the front-end libraries from `node_modules/` into `adit/static/vendor/`.

ADIT loads nothing from a CDN: the files below are committed under `adit/static/vendor/` and
served like any other static file. `uv run cli vendor-assets` runs `npm ci` (versions pinned by
`package-lock.json`) and then `vendor_static_assets()`. To upgrade a library, bump it in
`package.json`, run `npm install`, then `uv run cli vendor-assets`, and commit the result.

This module needs no Django setup.
"""

import json
import shutil
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent.parent
NODE_MODULES_DIR = PROJECT_DIR / "node_modules"
VENDOR_DIR = PROJECT_DIR / "adit" / "static" / "vendor"

# Source (relative to node_modules/) -> destination (relative to adit/static/vendor/).
# Source maps are kept because the minified files reference them, and whitenoise's manifest
# storage refuses to collect a file whose referenced source map is missing.
VENDORED_FILES: dict[str, str] = {
    "bootstrap/dist/css/bootstrap.min.css": "bootstrap/css/bootstrap.min.css",
    "bootstrap/dist/css/bootstrap.min.css.map": "bootstrap/css/bootstrap.min.css.map",
    "bootstrap/dist/js/bootstrap.bundle.min.js": "bootstrap/js/bootstrap.bundle.min.js",
    "bootstrap/dist/js/bootstrap.bundle.min.js.map": "bootstrap/js/bootstrap.bundle.min.js.map",
    "bootstrap/LICENSE": "bootstrap/LICENSE",
    # The CSS finds its fonts in fonts/ next to it.
    "bootstrap-icons/font/bootstrap-icons.min.css": "bootstrap-icons/bootstrap-icons.min.css",
    **{
        f"bootstrap-icons/font/fonts/{font}": f"bootstrap-icons/fonts/{font}"
        for font in ("bootstrap-icons.woff2", "bootstrap-icons.woff")
    },
    "bootstrap-icons/LICENSE": "bootstrap-icons/LICENSE",
    "htmx.org/dist/htmx.min.js": "htmx/htmx.min.js",
    "htmx.org/LICENSE": "htmx/LICENSE",
    "alpinejs/dist/cdn.min.js": "alpinejs/alpine.min.js",
    # DICOM parsing and writing in the browser (the upload app pseudonymizes before sending).
    "dcmjs/build/dcmjs.min.js": "dcmjs/dcmjs.min.js",
    "dcmjs/build/dcmjs.min.js.map": "dcmjs/dcmjs.min.js.map",
    "dcmjs/License.txt": "dcmjs/LICENSE",
}


class VendoringError(Exception):
    """A file that should be vendored is missing from node_modules."""


def vendor_static_assets(
    node_modules: Path = NODE_MODULES_DIR, target: Path = VENDOR_DIR
) -> list[Path]:
    """Replace `target` with fresh copies of `VENDORED_FILES` from `node_modules`.

    Everything is checked before anything is deleted, so a failed run leaves the old files.

    Returns:
        The copied files (absolute paths under `target`).

    Raises:
        VendoringError: when `node_modules` lacks a listed file (run `npm ci` first).
    """
    missing = [source for source in VENDORED_FILES if not (node_modules / source).is_file()]
    if missing:
        raise VendoringError(
            f"These files are missing in {node_modules}: {', '.join(missing)}. "
            "Run `npm ci` in the project folder first (or check package.json)."
        )
    if target.exists():
        shutil.rmtree(target)
    copied = []
    for source, destination in VENDORED_FILES.items():
        destination_path = target / destination
        destination_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(node_modules / source, destination_path)
        copied.append(destination_path)
    versions = target / "VERSIONS.txt"
    versions.write_text(_versions_text(node_modules))
    copied.append(versions)
    return copied


def _versions_text(node_modules: Path) -> str:
    """Which package versions (and licenses) the vendored files come from."""
    lines = ["# Written by adit/core/vendoring.py; do not edit.\n"]
    for package in sorted({source.split("/")[0] for source in VENDORED_FILES}):
        manifest = node_modules / package / "package.json"
        meta = json.loads(manifest.read_text()) if manifest.is_file() else {}
        version = meta.get("version", "unknown")
        lines.append(f"{package} {version} ({meta.get('license', 'license unknown')})\n")
    return "".join(lines)


if __name__ == "__main__":
    for path in vendor_static_assets():
        print(path.relative_to(PROJECT_DIR))
