"""The layers of docs/architecture.md, checked on the source: no import goes up or sideways.

Each module belongs to a unit: the package right under ``crmhooks`` it is in (``delivery`` for
``crmhooks.delivery.queue``), or the top-level module itself (``errors``). A module may import
its own unit and the units of lower layers, never a unit of its own layer or of a higher one.
Every import counts: at module level, inside functions, under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import crmhooks

SRC = Path(crmhooks.__file__).parent

# Lowest first; the order of docs/architecture.md, Layers.
LAYERS: list[set[str]] = [
    {"crmhooks", "errors", "limits", "logs", "metrics"},  # crmhooks: the package's version
    {"settings", "netguard"},
    {"schema"},
    {"store"},
    {"query", "changes"},
    {"hooks"},
    {"delivery"},
    {"services"},
    {"api", "ui", "worker"},
    {"app", "listen"},
    {"cli"},
    {"__main__"},
]

# Imports against the order, each with the reason it is still there. An entry that is no
# longer needed fails the test: delete it.
EXCEPTIONS: dict[tuple[str, str], str] = {}

# Migrations are history: they may use nothing of crmhooks but their frozen column types.
MIGRATIONS = "crmhooks.store.migrations.versions"
MIGRATIONS_MAY_IMPORT = {"crmhooks.store.migrations.types"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _rank(unit: str) -> int:
    for rank, units in enumerate(LAYERS):
        if unit in units:
            return rank
    raise AssertionError(
        f"{unit} has no layer: add it to LAYERS here and to docs/architecture.md, Layers"
    )


def _imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """The crmhooks modules ``module`` imports, with the line of each import."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "crmhooks":
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] != "crmhooks":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in MODULES else base), node.lineno


def test_every_unit_has_a_layer() -> None:
    for module in MODULES:
        _rank(_unit(module))


def test_no_import_goes_against_the_layers() -> None:
    wrong: list[str] = []
    used: set[tuple[str, str]] = set()
    for module, path in MODULES.items():
        mine = _unit(module)
        for target, line in _imports(module, path):
            theirs = _unit(target)
            if theirs == mine or _rank(theirs) < _rank(mine):
                continue
            if (module, target) in EXCEPTIONS:
                used.add((module, target))
                continue
            wrong.append(f"{path.relative_to(SRC.parent)}:{line}: {module} imports {target}")
    assert not wrong, "imports against docs/architecture.md, Layers:\n" + "\n".join(wrong)
    assert used == set(EXCEPTIONS), f"no longer needed, delete: {set(EXCEPTIONS) - used}"


def test_migrations_import_only_their_frozen_types() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, path in MODULES.items()
        if module.startswith(MIGRATIONS + ".")
        for target, _ in _imports(module, path)
        if target not in MIGRATIONS_MAY_IMPORT
    ]
    assert not wrong


def test_a_leaf_module_imports_on_its_own() -> None:
    """No package's ``__init__`` pulls in a cycle (``crmhooks.ui.sessions`` once failed to
    import in a fresh interpreter, before anything else had imported ``crmhooks.api``)."""
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    for module in ["crmhooks.ui.sessions", "crmhooks.api.envelopes", "crmhooks.services.keys"]:
        done = subprocess.run(
            [sys.executable, "-c", f"import {module}"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 0, done.stderr
