"""Run the real csserver in a lab host: write its TOML, start it, wait for it, read its log, ask it over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from labkit.netns import Host, wait_until

REPO = Path(__file__).resolve().parents[1]
PORT = 9100


def csserver_toml(alias: str, aliases: dict[str, str], backup: dict[str, str], store_url: str,
                  listen: str = f"0.0.0.0:{PORT}") -> str:
    def table(mapping: dict[str, str]) -> str:
        return "{ " + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in mapping.items()) + " }"

    return (f'[node]\nalias = {json.dumps(alias)}\nlisten = {json.dumps(listen)}\nlog_format = "json"\n'
            f'log_level = "debug"\n[cluster]\naliases = {table(aliases)}\nbackup = {table(backup)}\n'
            f'[store]\nurl = {json.dumps(store_url)}\n')


@dataclass
class CsserverNode:
    """One `csserver run` in one lab host; the lab stops it by pid when it closes."""

    host: Host
    config_path: Path
    log_path: Path
    proc: subprocess.Popen | None = None

    @classmethod
    def start(cls, host: Host, workdir: Path, toml: str) -> CsserverNode:
        config = workdir / f"csserver-{host.name}.toml"
        config.write_text(toml)
        node = cls(host, config, workdir / f"csserver-{host.name}.log")
        log = open(node.log_path, "wb")
        node.proc = host.popen([sys.executable, "-m", "csserver", "run", "-c", str(config)], stdout=log,
                               stderr=subprocess.STDOUT, cwd=REPO)
        log.close()
        wait_until(lambda: node._started(), 20, 0.02, message=f"csserver on {host.name} did not start")
        return node

    def _started(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"csserver on {self.host.name} exited {self.proc.returncode}: {self.log_path.read_text()}")
        return any(e.get("event") == "csserver_started" for e in self.events())

    def events(self) -> list[dict]:
        """The JSON log lines written so far."""
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def wait_for_addresses(self, present: set[str], absent: set[str] = frozenset(), timeout: float = 5.0) -> None:
        """Until csserver's netlink view has seen `present` arrive and `absent` leave (from its log)."""
        def seen() -> bool:
            have: set[str] = set()
            for event in self.events():
                if event.get("event") == "local_addresses_changed":
                    have |= set(event["added"])
                    have -= set(event["removed"])
            return present <= have and not (absent & have)

        wait_until(seen, timeout, 0.01, message=f"csserver on {self.host.name} never saw {present} / not {absent}")


def event_time(event: dict) -> float:
    """A csserver log line's ISO UTC stamp on this process's monotonic clock (the clock the lab's netlink
    watchers and clients stamp with)."""
    return datetime.fromisoformat(event["timestamp"]).timestamp() - (time.time() - time.monotonic())


def http(client: Host, method: str, url: str, body: str | None = None) -> tuple[int, dict | str]:
    """One request with curl from `client`'s namespace: (status, decoded JSON or text)."""
    args = ["curl", "-sS", "-m", "5", "-X", method, "-o", "-", "-w", "\n%{http_code}", url]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", body]
    out = client.run(args, timeout=10).stdout
    text, _, status = out.rpartition("\n")
    try:
        return int(status), json.loads(text) if text else ""
    except ValueError:
        return int(status), text
