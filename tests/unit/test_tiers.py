"""How the tests are laid out (docs/testing.md): helpers live in ``tests/support`` and are
imported from there, never from a conftest or another test module; conftests only define
fixtures; a unit test touches no database, socket or process."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
MODULES = sorted(TESTS.rglob("*.py"))
# What a unit test may not import: a database, the network, processes, or the helpers for them.
NOT_IN_UNIT = ("sqlalchemy", "socket", "subprocess", "aiohttp", "httpx", "tests.support")
# The fixtures that give a database, an application, a server or a receiver.
FIXTURES_NOT_IN_UNIT = {
    "db_url",
    "empty_url",
    "empty_pg_url",
    "empty_db_url",
    "settings",
    "app_http",
    "app_client",
    "space",
    "spaces",
    "api",
    "server",
    "target",
    "inbox",
}


def _imported(tree: ast.Module) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append("." * node.level + node.module)
        elif isinstance(node, ast.ImportFrom):
            names.append(".")
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def _name(path: Path) -> str:
    return str(path.relative_to(TESTS.parent))


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_helpers_come_from_tests_support_only(path: Path) -> None:
    tree = ast.parse(path.read_text())
    wrong = [
        name
        for name in _imported(tree)
        if name.startswith(".")
        or name.split(".")[-1] == "conftest"
        or (name.startswith("tests.") and not name.startswith("tests.support"))
    ]
    assert not wrong, f"{_name(path)} imports {wrong}: move what it needs to tests/support"


@pytest.mark.parametrize("path", [p for p in MODULES if p.name == "conftest.py"], ids=_name)
def test_conftests_define_fixtures_only(path: Path) -> None:
    tree = ast.parse(path.read_text())
    others = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if not any("fixture" in ast.unparse(d) for d in node.decorator_list):
                others.append(node.name)
        elif isinstance(node, ast.ClassDef | ast.Assign | ast.AnnAssign):
            others.append(ast.unparse(node).split("\n")[0])
    assert not others, f"{_name(path)} defines {others}: helpers go to tests/support"


@pytest.mark.parametrize("path", sorted((TESTS / "unit").glob("test_*.py")), ids=_name)
def test_unit_tests_touch_no_database_socket_or_process(path: Path) -> None:
    tree = ast.parse(path.read_text())
    wrong = [n for n in _imported(tree) if n.startswith(NOT_IN_UNIT)]
    # What tests and fixtures ask pytest for (a plain helper's parameters are not fixtures).
    requested = {
        arg.arg
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (
            node.name.startswith("test")
            or any("fixture" in ast.unparse(d) for d in node.decorator_list)
        )
        for arg in node.args.args
    }
    wrong += sorted(requested & FIXTURES_NOT_IN_UNIT)
    assert not wrong, f"{_name(path)} uses {wrong}: it belongs in tests/integration"
