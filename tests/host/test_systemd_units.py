"""The shipped unit files: systemd-analyze verify accepts them, and they keep what the daemon relies on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import UNITS, require_program, unit_file

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("name", ["vrrpd.service", "csserver.service"])
def test_systemd_analyze_verify_passes(tmp_path, name):
    require_program("systemd-analyze")
    # The units name /usr/local/bin; verify them against this checkout's installed console scripts.
    text = (UNITS / name).read_text().replace("/usr/local/bin/", f"{BIN}/")
    (tmp_path / name).write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True, timeout=60)
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


def test_csserver_unit_is_ordered_after_vrrpd_and_has_no_capabilities():
    parsed = unit_file("csserver.service")
    assert "vrrpd.service" in parsed["Unit"]["After"].split()
    assert parsed["Service"]["CapabilityBoundingSet"] == ""
