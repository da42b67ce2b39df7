"""The shipped unit files: systemd-analyze verify accepts them, and they keep what the daemon relies on.

The lab (tests/lab/test_systemd_hosts.py) verifies them again as the package installs them, in a Debian 12
host; here they are checked against this checkout's console scripts and man pages.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, UNITS, require_program, unit_file

BIN = Path(sys.executable).parent
# The units' ExecCondition: does the file set anything, i.e. hold a line that is neither blank nor a comment?
SETS_NOTHING = "^[[:space:]]*(#.*)?$"
CONDITION = "/bin/grep -qvE '" + SETS_NOTHING.replace("$", "$$") + "' /etc/{name}/{name}.toml"  # $$: a literal $


@pytest.mark.parametrize("name", ["vrrpd.service", "csserver.service"])
def test_systemd_analyze_verify_passes(tmp_path, name):
    require_program("systemd-analyze")
    require_program("man")
    # The units name /usr/bin, where the package installs the commands; here, this checkout's console scripts.
    text = (UNITS / name).read_text().replace("/usr/bin/", f"{BIN}/")
    (tmp_path / name).write_text(text)
    env = {**os.environ, "MANPATH": f"{REPO / 'man'}:"}  # Documentation=man:... must name pages that exist
    proc = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "vrrpd.service" not in proc.stderr and "csserver.service" not in proc.stderr, proc.stderr


def test_vrrpd_unit_speaks_notify_with_watchdog_and_least_privilege():
    service = unit_file("vrrpd.service")["Service"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) > 0
    assert service["ExecReload"].endswith("-HUP $MAINPID")
    assert set(service["CapabilityBoundingSet"].split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert set(service["AmbientCapabilities"].split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert service["NoNewPrivileges"] == "yes"
    assert service["ExecStart"] == "/usr/bin/vrrpd run -c /etc/vrrpd/vrrpd.toml"


def test_csserver_unit_is_ordered_after_vrrpd_and_runs_as_its_user_without_capabilities():
    parsed = unit_file("csserver.service")
    assert "vrrpd.service" in parsed["Unit"]["After"].split()
    service = parsed["Service"]
    assert service["Type"] == "notify"
    assert service["CapabilityBoundingSet"] == ""
    assert service["User"] == service["Group"] == "csserver"
    assert service["StateDirectory"] == "csserver"
    assert service["ExecStart"] == "/usr/bin/csserver run -c /etc/csserver/csserver.toml"


@pytest.mark.parametrize("name", ["vrrpd", "csserver"])
def test_the_packaged_config_sets_nothing_so_the_unit_is_skipped_and_a_sample_starts_it(tmp_path, name):
    """The unit's ExecCondition on the file /etc gets from the package, and on what an operator writes there."""
    assert unit_file(f"{name}.service")["Service"]["ExecCondition"] == CONDITION.format(name=name)
    sample = {"vrrpd": "node-a.toml", "csserver": "csserver-a.toml"}[name]
    cases = {"packaged": (REPO / "conf/etc" / name / f"{name}.toml").read_text(), "empty": "",
             "sample": (REPO / "conf" / sample).read_text(), "one key": "  [node]  # a table alone counts\n"}
    for case, text in cases.items():
        (tmp_path / f"{case}.toml").write_text(text)
    results = {case: subprocess.run(["/bin/grep", "-qvE", SETS_NOTHING, str(tmp_path / f"{case}.toml")],
                                    capture_output=True, timeout=10).returncode for case in [*cases, "missing"]}
    # 0 runs the unit; 1..254 skip it without failing it (systemd.service(5), ExecCondition=).
    assert results == {"packaged": 1, "empty": 1, "sample": 0, "one key": 0, "missing": 2}
