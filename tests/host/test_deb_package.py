"""`make deb`'s packages, read with dpkg-deb: the files an operator gets, the conffiles, and Depends that
cover every library the shipped code imports (the lab installs and runs them: tests/lab/test_systemd_hosts.py).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import csserver
import vrrpd
from tests.support import REPO, built_debs, require_program

# The Debian package of each third-party module the daemons may import.
DEBIAN_PACKAGE = {"structlog": "python3-structlog", "aiohttp": "python3-aiohttp", "yarl": "python3-yarl",
                  "psycopg": "python3-psycopg"}
# Imported only for a feature that is off unless configured: a Recommends serves, and apt installs it.
OPTIONAL = {("vrrpd", "aiohttp")}  # [global] metrics_listen
PACKAGES = {"vrrpd": ("vrrpd", "daemonkit"), "csserver": ("csserver", "daemonkit")}


def deb(name: str) -> Path:
    return next(d for d in built_debs() if d.name.startswith(f"{name}_"))


def contents(name: str) -> set[str]:
    listing = subprocess.run(["dpkg-deb", "-c", str(deb(name))], capture_output=True, text=True, check=True).stdout
    return {line.split(None, 5)[5].removeprefix(".").split(" -> ")[0] for line in listing.splitlines()}


def field(name: str, key: str) -> str:
    proc = subprocess.run(["dpkg-deb", "-f", str(deb(name)), key], capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def relations(name: str, key: str) -> set[str]:
    return {re.split(r"[\s(:]", alt.split("|")[0].strip())[0] for alt in field(name, key).split(",") if alt.strip()}


def shipped_modules(package: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", *PACKAGES[package]], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return [REPO / line for line in out.split() if line.endswith(".py")]


@pytest.mark.parametrize("name", ["vrrpd", "csserver"])
def test_each_package_holds_its_command_unit_config_docs_and_every_module(name):
    files = contents(name)
    config = f"/etc/{name}/{name}.toml"
    manual = {"vrrpd": ("vrrpd.8", "vrrpd.toml.5"), "csserver": ("csserver.8", "csserver.toml.5")}[name]
    samples = {"vrrpd": ("node-a.toml", "node-b.toml"), "csserver": ("csserver-a.toml", "csserver-b.toml")}[name]
    expected = {f"/usr/bin/{name}", f"/lib/systemd/system/{name}.service", config,
                f"/usr/share/bash-completion/completions/{name}", f"/usr/share/doc/{name}/copyright",
                *(f"/usr/share/man/man{page[-1]}/{page}.gz" for page in manual),
                *(f"/usr/share/doc/{name}/examples/{sample}" for sample in samples),
                *(f"/usr/lib/{name}/{path.relative_to(REPO)}" for path in shipped_modules(name))}
    assert expected <= files, sorted(expected - files)
    # Nothing of the developers' side: no tests, lab, benchmarks, or the other daemon's code.
    other = "csserver" if name == "vrrpd" else "vrrpd"
    assert not [f for f in files if re.search(rf"/(tests|labkit|bench|{other})/", f)]
    ctl = subprocess.run(["dpkg-deb", "-I", str(deb(name)), "conffiles"], capture_output=True, text=True, check=True)
    assert ctl.stdout.split() == [config]


@pytest.mark.parametrize("name", ["vrrpd", "csserver"])
def test_depends_cover_every_library_the_shipped_code_imports(name):
    """A module the code imports but no Depends (or, for an optional feature, Recommends) brings in would
    fail on an operator's host; the lab's root file system holds exactly these relations."""
    imported = set()
    for path in shipped_modules(name):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"vrrpd", "csserver", "daemonkit"}
    assert third_party <= set(DEBIAN_PACKAGE), f"no Debian package known for {third_party - set(DEBIAN_PACKAGE)}"
    depends, recommends = relations(name, "Depends"), relations(name, "Recommends")
    for module in third_party:
        wanted = recommends | depends if (name, module) in OPTIONAL else depends
        assert DEBIAN_PACKAGE[module] in wanted, f"{name} imports {module}: {DEBIAN_PACKAGE[module]} is not in {wanted}"
    assert "python3" in depends and "(>= 3.11" in field(name, "Depends")  # tomllib


def test_the_package_version_is_the_code_and_pyproject_version():
    with open(REPO / "pyproject.toml", "rb") as fh:
        project = tomllib.load(fh)["project"]["version"]
    versions = {field(name, "Version") for name in ("vrrpd", "csserver")}
    assert versions == {vrrpd.__version__} == {csserver.__version__} == {project}


def test_the_command_runs_from_the_packages_private_module_directory(tmp_path):
    """/usr/bin/vrrpd as installed, run by Debian's python3, which has no vrrpd of its own (unlike this
    checkout's venv): the modules come from the package's private directory (here under tmp_path)."""
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb("vrrpd")), str(root)], check=True)
    wrapper = (root / "usr/bin/vrrpd").read_text()
    assert wrapper.startswith("#!/usr/bin/python3 -I\n")  # isolated: no PYTHONPATH, no user site, no cwd
    (tmp_path / "vrrpd").write_text(wrapper.replace("/usr/lib/vrrpd", str(root / "usr/lib/vrrpd")))
    args = ["/usr/bin/python3", "-I", str(tmp_path / "vrrpd"), "check", "-c", str(REPO / "conf/node-a.toml")]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "ok (2 instances" in proc.stdout


def test_lintian_finds_no_error_or_warning():
    """Debian's own package checker (its informational notes, such as no SysV init script, are not asked)."""
    require_program("lintian")
    proc = subprocess.run(["lintian", "--fail-on", "none", "--tag-display-limit", "0", *map(str, built_debs())],
                          capture_output=True, text=True, timeout=300)
    findings = [line for line in proc.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert proc.returncode == 0 and findings == [], proc.stdout + proc.stderr
