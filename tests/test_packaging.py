"""What `pip install .` ships: every subpackage of chat_server and its data files."""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_for_installation():
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    listed = {name.strip() for name in setup["options"]["packages"].split(",")}
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "chat_server").rglob("__init__.py")
    }
    assert found <= listed, f"not installed: {sorted(found - listed)}"


def test_every_web_client_file_is_shipped():
    """package_data globs do not descend into folders: web/vendor/ needs its own."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    package = ROOT / "chat_server"
    patterns = [p.strip() for p in setup["options.package_data"]["chat_server"].split(",")]
    shipped = {path for pattern in patterns for path in package.glob(pattern) if path.is_file()}
    web_files = {path for path in (package / "web").rglob("*") if path.is_file()}
    assert (package / "web" / "vendor" / "marked.esm.js") in web_files
    assert web_files <= shipped, f"not shipped: {sorted(map(str, web_files - shipped))}"
