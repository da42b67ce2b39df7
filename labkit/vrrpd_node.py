"""Run the real vrrpd in a lab host: write its TOML, start it, read its status, stop it by pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from vrrpd.io.control import query
from daemonkit.tomlwrite import toml_value

REPO = Path(__file__).resolve().parents[1]


def vrrpd_toml(router_id: str, control_socket: str, instances: list[dict], scripts=(), sync_groups=(), **global_kw) -> str:
    settings = {"router_id": router_id, "control_socket": control_socket, "log_format": "json", "log_level": "debug",
                **global_kw}
    lines = ["[global]"] + [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    for table, items in (("script", scripts), ("instance", instances), ("sync_group", sync_groups)):
        for item in items:
            lines += ["", f"[[{table}]]"] + [f"{k} = {toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


@dataclass
class VrrpdNode:
    """One vrrpd process in one lab host."""

    host: object  # labkit.netns.Host
    workdir: Path
    instances: list[dict]
    scripts: list[dict] = field(default_factory=list)
    sync_groups: list[dict] = field(default_factory=list)
    global_kw: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    python: str = sys.executable  # the interpreter (a production venv, say, for a memory figure)

    @property
    def socket_path(self) -> str:
        return str(self.workdir / f"{self.host.name}.sock")

    @property
    def config_path(self) -> Path:
        return self.workdir / f"{self.host.name}.toml"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.host.name}.log"

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            vrrpd_toml(self.host.name, self.socket_path, self.instances, self.scripts, self.sync_groups, **self.global_kw)
        )

    def start(self, env: dict | None = None) -> VrrpdNode:
        self.write_config()
        log = open(self.log_path, "ab")
        self.proc = self.host.popen(
            [self.python, "-m", "vrrpd", "run", "-c", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        )
        log.close()
        return self

    def status(self) -> dict | None:
        try:
            return query(self.socket_path, timeout=1.0)
        except OSError:
            return None

    def instance(self, name: str) -> dict | None:
        status = self.status()
        if not status:
            return None
        return next((i for i in status["instances"] if i["name"] == name), None)

    def state(self, name: str) -> str | None:
        inst = self.instance(name)
        return inst["state"] if inst else None

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_events(self, event: str | None = None) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if event is None or record.get("event") == event:
                out.append(record)
        return out

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
