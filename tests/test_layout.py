"""The engine owns its types: no module of llmctl/ imports a provider package (providers are found through the
`llmctl.providers` entry-point group, so the engine works with whichever are installed, a third party's too)."""
from __future__ import annotations

import ast
from pathlib import Path

from support import REPO


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_engine_module_imports_a_provider() -> None:
    offenders = {str(path.relative_to(REPO)): sorted(name for name in _imported(path)
                                                     if name == "providers" or name.startswith("providers."))
                 for path in (REPO / "llmctl").rglob("*.py")}
    assert {path: names for path, names in offenders.items() if names} == {}
