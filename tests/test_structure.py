"""The architecture, checked: protocol faces (app/api, app/ui, app/v1, app/ollama) stand on the domain below them and never reach
each other; the domain never reaches a face, however many imports away; and no modules import each other in a circle.
Imports are followed transitively, at module level and inside functions alike. And the benchmarks, which no other
test runs, still import."""

import ast
import importlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from config import ROOT

FACES = ["app.api", "app.ui", "app.v1", "app.ollama"]
# What puts the faces and the domain together: they may import anything.
ENTRY_POINTS = {"app", "worker", "wsgi"}


def _imports(path: Path) -> Iterator[tuple[str, list[str]]]:
    """Each import in a file, at any depth, as (the module it names, the names it takes from it: none for a plain
    `import`); relative imports made absolute."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            yield ".".join(part for part in (base, node.module) if part), [alias.name for alias in node.names]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, absolute or relative, at any depth (a function-level import counts too)."""
    return {name for module, names in _imports(path) for name in [module, *(f"{module}.{n}" for n in names)]}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def project_modules() -> dict[str, Path]:
    files = [*(ROOT / "app").rglob("*.py"), ROOT / "config.py", ROOT / "worker.py", ROOT / "wsgi.py"]
    return {module_name(path): path for path in files}


def _enclosing(name: str, modules: dict[str, Path]) -> str | None:
    """The project module that defines a dotted name (app.models.Job -> app.models), if any does."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def dependencies(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules a file loads: `from P import x` loads the module P.x where there is one, else P."""
    found = set()
    for module, names in _imports(path):
        for name in names or [""]:
            target = f"{module}.{name}" if f"{module}.{name}" in modules else module
            found.add(_enclosing(target, modules))
    return found - {None, module_name(path)}


@cache
def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports. A face's blueprint importing its own route modules at its end (so
    they register on it) is composition, not a dependency back up, and is left out."""
    modules = project_modules()
    return {name: {dep for dep in dependencies(path, modules) if not (name in FACES and dep.startswith(name + "."))}
            for name, path in modules.items()}


def path_to(start: str, goal) -> list[str] | None:
    """The shortest chain of imports from `start` to a module for which `goal` holds, if there is one."""
    graph, came_from, frontier = import_graph(), {start: None}, [start]
    while frontier:
        following = []
        for module in frontier:
            for dep in sorted(graph[module]):
                if dep in came_from:
                    continue
                came_from[dep] = module
                if goal(dep):
                    chain = [dep]
                    while chain[-1] != start:
                        chain.append(came_from[chain[-1]])
                    return chain[::-1]
                following.append(dep)
        frontier = following
    return None


def face_of(module: str) -> str | None:
    return next((face for face in FACES if module == face or module.startswith(face + ".")), None)


def test_no_module_imports_itself_through_others():
    circles = {_from_its_least(chain) for module in import_graph()
               if (chain := path_to(module, lambda dep, module=module: module in import_graph()[dep]))}
    assert not circles, "import circles:\n" + "\n".join(" -> ".join([*chain, chain[0]]) for chain in sorted(circles))


def _from_its_least(chain: list[str]) -> tuple[str, ...]:
    """A circle told from its alphabetically first module, so each is reported once, from wherever it was found."""
    first = chain.index(min(chain))
    return tuple(chain[first:] + chain[:first])


def test_the_domain_never_reaches_a_face():
    domain = [module for module in import_graph() if face_of(module) is None and module not in ENTRY_POINTS]
    upward = [chain for module in sorted(domain) if (chain := path_to(module, face_of))]
    assert not upward, "the domain imports a face:\n" + "\n".join(" -> ".join(chain) for chain in upward)


@pytest.mark.parametrize("face", FACES)
def test_no_face_reaches_another(face):
    mine = sorted(module for module in import_graph() if face_of(module) == face)
    assert mine
    crossing = [chain for module in mine if (chain := path_to(module, lambda dep: face_of(dep) not in (None, face)))]
    assert not crossing, f"{face} reaches another face:\n" + "\n".join(" -> ".join(chain) for chain in crossing)


def test_the_walker_sees_imports_at_the_end_of_a_module_and_relative_ones():
    assert "app.ui.answers" in imported_modules(ROOT / "app" / "ui" / "__init__.py")
    assert "tests.ui.browser" in imported_modules(ROOT / "tests" / "ui" / "conftest.py")


def test_the_graph_holds_imports_made_inside_functions_and_from_packages():
    graph = import_graph()
    assert {"app.api", "app.ui", "app.v1", "app.ollama"} <= graph["app"]  # create_app registers the blueprints inside a function
    assert {"app.batch_lines", "app.models"} <= graph["app.batches"]  # `from app import X` loads app.X, not app
    assert "app" not in graph["app.batches"]
    assert {"app.jobs.lifecycle", "app.jobs.store"} <= graph["app.batch_lines"]  # and from a package, its module
    assert "app.jobs" not in graph["app.batch_lines"]


MAX_LINES = 350  # a module longer than this has outgrown the one idea its first line names: split it by idea


def test_no_module_is_longer_than_one_idea():
    long = {name: lines for name, path in project_modules().items() if name.startswith("app.")
            and "migrations" not in path.parts and (lines := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("script", sorted(path.stem for path in (ROOT / "bench").glob("*.py")))
def test_every_benchmark_still_imports_what_it_uses(script):
    """Benchmarks run only under `make bench`, so a name moved in app/ would break one unseen until then."""
    importlib.import_module(f"bench.{script}")
