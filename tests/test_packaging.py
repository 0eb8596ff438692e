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
