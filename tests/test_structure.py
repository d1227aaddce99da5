"""The architecture, checked: protocol faces (app/api, app/ui, app/v1) share rules below them and never import
each other."""

import ast
from pathlib import Path

import pytest

from config import ROOT

FACES = ["app.api", "app.ui", "app.v1"]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, absolute or relative, at any depth (a function-level import counts too)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            found.update([module, *(f"{module}.{alias.name}" for alias in node.names)])
    return found


@pytest.mark.parametrize("face", FACES)
def test_no_face_imports_another(face):
    others = [other for other in FACES if other != face]
    files = sorted((ROOT / face.replace(".", "/")).rglob("*.py"))
    assert files
    for path in files:
        crossing = {name for name in imported_modules(path) for other in others
                    if name == other or name.startswith(other + ".")}
        assert not crossing, f"{path.relative_to(ROOT)} imports {sorted(crossing)}"


def test_the_walker_sees_imports_at_the_end_of_a_module_and_relative_ones():
    assert "app.ui.answers" in imported_modules(ROOT / "app" / "ui" / "__init__.py")
    assert "tests.ui.browser" in imported_modules(ROOT / "tests" / "ui" / "conftest.py")
