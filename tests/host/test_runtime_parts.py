"""Notify runner, systemd notifier and control socket: the daemon's small edges, without a network."""

from __future__ import annotations

import asyncio
from dataclasses import replace
import os
import socket
import stat
import sys

import pytest

from vrrpd.io.control import ControlServer, query
from vrrpd.config import Script, parse
from vrrpd.core.fsm import State
from vrrpd.core.notify import Job, jobs_for
from vrrpd.io.notify import NotifyRunner
from vrrpd.io.scripts import ScriptChecker
from daemonkit import log as logging
from daemonkit.systemd import Notifier


def run(coro):
    return asyncio.run(coro)


def test_jobs_follow_keepalived_argument_convention():
    inst = parse('[[instance]]\nname = "VI_A"\ninterface = "eth0"\nvrid = 51\nvirtual_ipaddress = ["192.0.2.100"]\n'
                 'notify = "/usr/local/bin/vrrp-notify --flag"\nnotify_master = "/bin/echo master"\n').instance("VI_A")
    jobs = jobs_for(inst, State.MASTER, 150)
    assert [j.argv for j in jobs] == [
        ("/bin/echo", "master"),
        ("/usr/local/bin/vrrp-notify", "--flag", "INSTANCE", "VI_A", "MASTER", "150"),
    ]
    assert dict(jobs[0].env)["VRRPD_STATE"] == "MASTER"
    assert [j.argv[-2:] for j in jobs_for(inst, State.BACKUP, 100)] == [("BACKUP", "100")]


def test_notify_runs_in_order_one_at_a_time_and_survives_hung_and_failing(tmp_path):
    log = tmp_path / "log"
    script = tmp_path / "n.sh"
    # Each job appends "start N" then "end N": overlap would interleave them.
    script.write_text(f"#!/bin/sh\necho start $1 >> {log}\nsleep 0.05\necho end $1 >> {log}\n")
    script.chmod(0o755)

    async def scenario():
        runner = NotifyRunner(timeout=0.5)
        runner.start()
        runner.submit([Job((str(script), "1"))])
        runner.submit([Job(("/bin/sh", "-c", "sleep 30"))])  # hung: killed at the timeout
        runner.submit([Job(("/bin/false",))])  # failing: logged, counted
        runner.submit([Job(("/nonexistent/notify",))])  # cannot start
        runner.submit([Job((str(script), "2")), Job((str(script), "3"))])
        loop = asyncio.get_running_loop()
        await runner.flush(loop.time() + 10)
        await runner.stop()
        return runner

    runner = run(scenario())
    assert log.read_text().split("\n")[:-1] == ["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"]
    assert runner.failures == 3 and runner.completed == 3


def test_notify_does_not_block_the_loop():
    async def scenario():
        runner = NotifyRunner(timeout=5)
        runner.start()
        runner.submit([Job(("/bin/sh", "-c", "sleep 1"))])
        loop = asyncio.get_running_loop()
        started = loop.time()
        ticks = 0
        while loop.time() - started < 0.3:
            await asyncio.sleep(0.01)
            ticks += 1
        await runner.stop()
        return ticks

    assert run(scenario()) >= 15  # the loop kept running while the command slept


def test_systemd_notifier_speaks_the_protocol(tmp_path):
    path = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(2)
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
    assert notifier.watchdog_interval == 2.0
    notifier.ready(status="VI_A=MASTER")
    notifier.reloading()
    notifier.watchdog()
    notifier.stopping()
    got = [receiver.recv(4096).decode() for _ in range(4)]
    assert got[0] == "READY=1\nSTATUS=VI_A=MASTER"
    assert got[1].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert got[2:] == ["WATCHDOG=1", "STOPPING=1"]
    receiver.close()


def test_systemd_notifier_is_silent_without_socket():
    notifier = Notifier({})
    assert not notifier.enabled and notifier.ready() is False and notifier.watchdog_interval is None


def test_watchdog_ignored_for_another_pid():
    assert Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_interval is None


def test_control_socket_is_root_only_and_answers_status(tmp_path):
    path = str(tmp_path / "run" / "vrrpd.sock")

    async def scenario():
        server = ControlServer(path, lambda: {"router_id": "node-a", "instances": []})
        await server.start()
        mode = stat.S_IMODE(os.stat(path).st_mode)
        answer = await asyncio.to_thread(query, path)
        unknown = await asyncio.to_thread(query, path, "bogus")
        # a second daemon must not steal a live socket
        with pytest.raises(OSError, match="already running"):
            await ControlServer(path, dict).start()
        await server.close()
        return mode, answer, unknown

    mode, answer, unknown = run(scenario())
    assert mode == 0o600
    assert answer == {"router_id": "node-a", "instances": []}
    assert unknown["error"] == "unknown_command"
    assert not os.path.exists(path)


def test_control_socket_left_by_dead_daemon_is_replaced(tmp_path):
    path = str(tmp_path / "vrrpd.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # the file stays, nobody listens

    async def scenario():
        server = ControlServer(path, lambda: {"ok": True})
        await server.start()
        answer = await asyncio.to_thread(query, path)
        await server.close()
        return answer

    assert run(scenario()) == {"ok": True}


def test_status_cli_exits_3_when_no_daemon(tmp_path):
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "vrrpd", "status", "-s", str(tmp_path / "none.sock")], capture_output=True, text=True
    )
    assert proc.returncode == 3
    assert "no daemon answered" in proc.stderr


def test_the_daemon_loads_neither_scapy_nor_aiohttp_unless_asked():
    """RSS budget (issue: at most 48 MB): scapy is a test oracle only, aiohttp loads with metrics_listen only."""
    import subprocess
    import sys

    code = "import sys, vrrpd.ops.cli, vrrpd.runtime; print(sorted(m for m in ('scapy', 'aiohttp') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_hung_script_is_killed_at_timeout():
    script = replace(Script("chk", ("/bin/true",)), command=("/bin/sleep", "30"), timeout=0.2)

    async def once():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        ok = await ScriptChecker(script, lambda *_: None).run_once()
        return ok, loop.time() - t0

    ok, took = run(once())
    assert ok is False and took < 2.0


def test_a_failing_effect_never_drops_the_effects_queued_after_it():
    """The old worker wrapped a whole batch in one try: an AddAddresses that raised lost the announcement, the
    notify and everything after it. Each effect now fails alone, and the Node hears of it."""
    from vrrpd.core import events as n
    from vrrpd.runtime import RouterQueue

    class FakeRuntime:
        def __init__(self):
            self.done, self.fed = [], []
            self.log = logging.get("test")

        async def carry_queued(self, router, effect):
            if isinstance(effect, n.AddAddresses):
                raise RuntimeError("netlink exploded")
            self.done.append(type(effect).__name__)

        def feed(self, events, routed=()):
            self.fed += events

    async def scenario():
        runtime = FakeRuntime()
        queue = RouterQueue(runtime, 7)
        for effect in (n.AddAddresses("eth0", ()), n.Announce("eth0", (), 1), n.Notify(()), n.Retire()):
            queue.put(effect)
        await asyncio.wait_for(queue.idle.wait(), 5)
        return runtime, queue

    runtime, queue = run(scenario())
    assert runtime.done == ["Announce", "Notify", "Retire"]
    assert [(e.router, type(e.effect).__name__) for e in runtime.fed] == [(7, "AddAddresses")]
    assert queue.task is None


def test_a_second_sigterm_while_exiting_does_not_turn_a_clean_exit_into_a_death_by_signal(tmp_path):
    """Supervisors repeat SIGTERM; once the daemon has shut down, the rest of its exit must stay exit 0."""
    import subprocess

    code = (
        "import asyncio, os, signal, sys, time\n"
        "from vrrpd.runtime import Runtime\n"
        "from vrrpd.config import parse\n"
        "cfg = parse('[global]\\ncontrol_socket = \"" + str(tmp_path / "c.sock") + "\"\\n'\n"
        "            '[[instance]]\\nname = \"VI_1\"\\ninterface = \"nosuch0\"\\nvrid = 1\\n'\n"
        "            'virtual_ipaddress = [\"192.0.2.100\"]\\n')\n"
        "async def main():\n"
        "    rt = Runtime(cfg)\n"
        "    asyncio.get_running_loop().call_later(0.5, os.kill, os.getpid(), signal.SIGTERM)\n"
        "    return await rt.run()\n"
        "code = asyncio.run(main())\n"
        "os.kill(os.getpid(), signal.SIGTERM)  # the supervisor, again, while the interpreter winds down\n"
        "time.sleep(0.2)\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
