"""The direction of imports between the top-level packages, read from the source with ``ast``.

Every import counts, also one inside a function or under ``if TYPE_CHECKING:``, since
either is an arrow a reader has to follow. The rules (README.md, *Layout*):

- no component of the platform (``bridge``, ``twin``, ``rules``, ``fleet``) imports ``api``,
  the HTTP surface;
- ``chargetwin``, the shared infrastructure, imports no component, nor ``simulator`` nor
  ``launch``;
- ``launch``, the composition root, is the one package that imports every component, and
  nothing imports it; the platform does not import the simulator either;
- the simulator imports nothing of the platform, and its own modules form no cycle.

The checks run on the repository and, so that they are known to fail on a wrong arrow, on
small packages written to ``tmp_path`` that break each rule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ("bridge", "twin", "rules", "fleet", "api")
PLATFORM = ("chargetwin", *COMPONENTS)
PACKAGES = (*PLATFORM, "simulator", "launch")


@dataclass(frozen=True, slots=True)
class Arrow:
    """``source`` (a module's dotted name) imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.source} imports {self.target}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(root: Path, dotted: str) -> bool:
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def arrows(root: Path, package: str) -> list[Arrow]:
    """Every import in every module of ``package`` under ``root``, relative ones resolved.

    ``from a import b`` points at the module ``a.b`` when there is one, else at ``a``.
    """
    found: list[Arrow] = []
    files = sorted((root / package).rglob("*.py"))
    assert files, f"no modules under {root / package}"
    for path in files:
        source = module_name(root, path)
        # The package a relative import starts from: the module's own for __init__.py.
        here = source.split(".") if path.name == "__init__.py" else source.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    start = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    start = node.module or ""
                for alias in node.names:
                    candidate = f"{start}.{alias.name}"
                    targets.append(candidate if is_module(root, candidate) else start)
            found.extend(Arrow(source, t, path.relative_to(root), node.lineno) for t in targets)
    return found


def top(dotted: str) -> str:
    return dotted.split(".", 1)[0]


def wrong_arrows(root: Path, packages: Iterable[str], forbidden: Iterable[str]) -> list[str]:
    """The imports from any of ``packages`` into any of ``forbidden``."""
    banned = set(forbidden)
    return [
        str(arrow)
        for package in packages
        for arrow in arrows(root, package)
        if top(arrow.target) in banned and top(arrow.target) != package
    ]


def cycle(root: Path, package: str) -> list[str]:
    """One import cycle among the modules of ``package`` (the modules on it), or []."""
    graph: dict[str, set[str]] = {}
    for arrow in arrows(root, package):
        graph.setdefault(arrow.source, set())
        if top(arrow.target) == package and arrow.target != arrow.source:
            graph[arrow.source].add(arrow.target)
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str]:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return []
        path.append(module)
        for target in sorted(graph.get(module, ())):
            found = visit(target)
            if found:
                return found
        path.pop()
        done.add(module)
        return []

    for module in sorted(graph):
        found = visit(module)
        if found:
            return found
    return []


# -- the repository ----------------------------------------------------------------------


def test_no_component_imports_the_api() -> None:
    assert wrong_arrows(ROOT, ("bridge", "twin", "rules", "fleet"), ("api",)) == []


def test_shared_infrastructure_imports_no_component() -> None:
    assert wrong_arrows(ROOT, ("chargetwin",), (*COMPONENTS, "simulator", "launch")) == []


def test_only_the_composition_root_imports_the_components_together() -> None:
    assert wrong_arrows(ROOT, (*PLATFORM, "simulator"), ("launch",)) == []
    assert wrong_arrows(ROOT, PLATFORM, ("simulator",)) == []
    imported = {top(arrow.target) for arrow in arrows(ROOT, "launch")}
    assert set(COMPONENTS) | {"simulator", "chargetwin"} <= imported


def test_simulator_imports_nothing_of_the_platform() -> None:
    assert wrong_arrows(ROOT, ("simulator",), (*PLATFORM, "launch")) == []


def test_simulator_modules_form_no_cycle() -> None:
    assert cycle(ROOT, "simulator") == []


def test_every_top_level_package_is_checked() -> None:
    """A new top-level package gets a place in these rules before it gets code."""
    present = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert present - {"tests", "bench", "scripts"} <= set(PACKAGES), sorted(present)


# -- the checks themselves, on packages that break the rules ------------------------------


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_an_import_inside_a_function_is_a_wrong_arrow(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "api/__init__.py": "",
            "api/tokens.py": "",
            "bridge/__init__.py": "",
            "bridge/app.py": "def start() -> None:\n    from api import tokens\n",
        },
    )
    assert wrong_arrows(root, ("bridge",), ("api",)) == [
        "bridge/app.py:2: bridge.app imports api.tokens"
    ]


def test_an_import_for_type_checking_is_a_wrong_arrow(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "chargetwin/__init__.py": "",
            "chargetwin/mqtt.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import twin.app\n"
            ),
            "twin/__init__.py": "",
            "twin/app.py": "",
        },
    )
    assert wrong_arrows(root, ("chargetwin",), ("twin",)) == [
        "chargetwin/mqtt.py:3: chargetwin.mqtt imports twin.app"
    ]


def test_imports_within_a_package_are_allowed(tmp_path: Path) -> None:
    root = write(tmp_path, {"api/__init__.py": "", "api/app.py": "from api import routes\n"})
    assert wrong_arrows(root, ("api",), ("api",)) == []


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {
                "sim/__init__.py": "",
                "sim/a.py": "from sim import b\n",
                "sim/b.py": "from sim.c import thing\n",
                "sim/c.py": "def thing() -> None:\n    from . import a\n",
            },
            ["sim.a", "sim.b", "sim.c", "sim.a"],
        ),
        (
            {
                "sim/__init__.py": "",
                "sim/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                "    from sim.b import B\n",
                "sim/b.py": "from .a import A\n",
            },
            ["sim.a", "sim.b", "sim.a"],
        ),
        (
            {
                "sim/__init__.py": "from sim.top import run\n",
                "sim/top.py": "from sim import low\nfrom . import low as again\n",
                "sim/low.py": "import os\n",
            },
            [],
        ),
    ],
    ids=["through-a-function", "through-type-checking", "one-way"],
)
def test_cycles_are_found(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    assert cycle(write(tmp_path, files), "sim") == expected
