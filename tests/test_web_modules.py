"""The web client's ES modules import only names their modules export: a
missing export fails the whole page at load (no build step catches it)."""

from __future__ import annotations

import re
from pathlib import Path

WEB = Path(__file__).resolve().parent.parent / "chat_server" / "web"
DECLARED = re.compile(r"^export (?:async )?(?:function\*?|class|const|let) ([\w$]+)", re.M)
LISTED = re.compile(r"^export \{([^}]*)\}", re.M)
IMPORTED = re.compile(r"import \{([^}]*)\} from '\./([\w.]+)'")


def _exports(source: str) -> set[str]:
    names = set(DECLARED.findall(source))
    for group in LISTED.findall(source):
        names |= {name.split(" as ")[-1].strip() for name in group.split(",") if name.strip()}
    return names


def test_every_named_import_is_exported() -> None:
    modules = {path.name: path.read_text() for path in WEB.glob("*.js")}
    exports = {name: _exports(source) for name, source in modules.items()}
    missing = [
        f"{importer} imports {name} from {module}"
        for importer, source in modules.items()
        for group, module in IMPORTED.findall(source)
        for name in (part.split(" as ")[0].strip() for part in group.split(","))
        if name and (module not in exports or name not in exports[module])
    ]
    assert len(modules) > 30
    assert missing == []
