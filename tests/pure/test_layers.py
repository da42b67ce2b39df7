"""The layers, held by their imports: the core is pure, daemonkit serves both daemons, nobody imports the tests.

Read from each module's own import statements (ast), so a layer cannot drift without this test failing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import REPO

IMPURE = {"asyncio", "socket", "os", "time", "datetime", "subprocess", "select", "signal", "threading",
          "pyroute2", "aiohttp", "psycopg", "sqlite3", "structlog", "logging"}
EDGES = ("vrrpd.io", "vrrpd.runtime", "vrrpd.ops", "vrrpd.metrics")
TOP_LEVEL = {"vrrpd", "csserver", "daemonkit", "labkit", "tests", "bench"}


def imports(path: Path) -> set[str]:
    """Every module `path` imports (absolute names; `from x import y` gives x and x.y)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def offending(package: str, rule) -> dict[str, list[str]]:
    bad = {}
    for path in modules(package):
        names = sorted(name for name in imports(path) if rule(name))
        if names:
            bad[str(path.relative_to(REPO))] = names
    return bad


def root(name: str) -> str:
    return name.split(".", 1)[0]


def test_the_core_imports_no_edge_no_io_and_no_clock():
    def impure(name: str) -> bool:
        return root(name) in IMPURE or name.startswith(EDGES) or root(name) in {"csserver", "labkit", "tests"}
    assert offending("vrrpd/core", impure) == {}


def test_daemonkit_imports_neither_daemon():
    assert offending("daemonkit", lambda name: root(name) in {"vrrpd", "csserver", "labkit", "tests"}) == {}


@pytest.mark.parametrize("package, other", [("vrrpd", "csserver"), ("csserver", "vrrpd")])
def test_the_daemons_never_import_each_other(package, other):
    assert offending(package, lambda name: root(name) == other) == {}


@pytest.mark.parametrize("package", ["vrrpd", "csserver", "daemonkit", "labkit", "bench"])
def test_product_lab_and_bench_never_import_the_tests(package):
    assert offending(package, lambda name: root(name) == "tests") == {}


@pytest.mark.parametrize("package", ["vrrpd", "csserver", "daemonkit"])
def test_the_product_never_imports_the_lab(package):
    assert offending(package, lambda name: root(name) in {"labkit", "bench"}) == {}


def test_the_rule_sees_a_violation(tmp_path):
    # The checker itself: a core module that imported socket would be caught.
    sample = tmp_path / "bad.py"
    sample.write_text("import socket\nfrom vrrpd.io.sockets import AdvertSocket\n")
    assert {"socket", "vrrpd.io.sockets"} <= imports(sample)
