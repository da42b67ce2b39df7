"""keepalived (the Debian package) as a lab peer: write its keepalived.conf and run it in a lab host.

`keepalived_conf` takes instances as dicts in keepalived's own words (`virtual_router_id`, `advert_int`,
`unicast_peer`...) or in vrrpd's (`vrid`, `advert_interval`, `unicast_peers`, `preempt = False`...), so an
interop test can describe both peers with one dict. GARP delays are off so failover tests stay fast.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from labkit.netns import Host

# vrrpd / SPEC names -> keepalived keywords
ALIASES = {
    "vrid": "virtual_router_id",
    "advert_interval": "advert_int",
    "unicast_src": "unicast_src_ip",
    "unicast_peers": "unicast_peer",
    "garp_repeat": "garp_master_repeat",
}

# Quick, quiet defaults for tests: one announcement burst, no delayed second burst, no startup delay.
FAST_GLOBALS: dict[str, Any] = {
    "vrrp_garp_master_delay": 0,
    "vrrp_garp_master_repeat": 1,
    "vrrp_garp_lower_prio_repeat": 1,
    "script_user": "root",
    "enable_script_security": True,
}


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _lines(key: str, value: Any, indent: str) -> list[str]:
    """keepalived syntax for one keyword: True -> bare keyword, list -> block, False/None -> left out."""
    if value is None or value is False:
        return []
    if value is True:
        return [f"{indent}{key}"]
    if isinstance(value, (list, tuple)):
        return [f"{indent}{key} {{", *(f"{indent}    {_value(v)}" for v in value), f"{indent}}}"]
    return [f"{indent}{key} {_value(value)}"]


def _instance_items(instance: dict) -> tuple[str, dict]:
    items = {ALIASES.get(k, k): v for k, v in instance.items()}
    name = items.pop("name", "VI_1")
    if items.pop("preempt", True) is False:
        items["nopreempt"] = True
    auth = {key: items.pop(key) for key in ("auth_type", "auth_pass") if key in items}
    if auth:
        items["authentication"] = [f"{key} {value}" for key, value in auth.items()]
    items.setdefault("state", "BACKUP")
    items.setdefault("interface", "eth0")
    for required in ("virtual_router_id", "priority", "virtual_ipaddress"):
        if required not in items:
            raise ValueError(f"instance {name}: {required} is required")
    return name, items


def keepalived_conf(
    instances: list[dict],
    *,
    router_id: str = "lab",
    vrrp_version: int = 3,
    scripts: dict[str, dict] | None = None,
    global_defs: dict[str, Any] | None = None,
) -> str:
    """A keepalived.conf with `global_defs`, optional `vrrp_script` blocks and one `vrrp_instance` each.

    `scripts` maps a script name to its keywords (`{"script": "/bin/true", "interval": 1, "weight": -60}`).
    """
    defaults = {"router_id": router_id, "vrrp_version": vrrp_version, **FAST_GLOBALS, **(global_defs or {})}
    lines = ["global_defs {"]
    for key, value in defaults.items():
        lines += _lines(key, value, "    ")
    lines.append("}")
    for name, keywords in (scripts or {}).items():
        lines += ["", f"vrrp_script {name} {{"]
        for key, value in keywords.items():
            lines += _lines(key, f'"{value}"' if key == "script" else value, "    ")
        lines.append("}")
    for instance in instances:
        name, items = _instance_items(instance)
        lines += ["", f"vrrp_instance {name} {{"]
        for key, value in items.items():
            lines += _lines(key, value, "    ")
        lines.append("}")
    return "\n".join(lines) + "\n"


def check_keepalived_conf(host: Host, path: Path) -> None:
    """keepalived's own config test, in `host`; raises AssertionError with its complaints."""
    proc = host.run(["keepalived", "--config-test", "--use-file", str(path)], check=False, timeout=30)
    if proc.returncode != 0:
        raise AssertionError(f"keepalived rejects {path} (exit {proc.returncode}):\n{proc.stderr}{proc.stdout}")


def start_keepalived(host: Host, conf_text: str, tmpdir: Path | str) -> subprocess.Popen:
    """Run keepalived (VRRP only, foreground, logging to its log file) in `host`; the lab stops it.

    Every file it uses is unique to this host and run: the config, the three pid files (a second
    keepalived refuses to start while a pid file names a live process) and the log, whose path is the
    returned Popen's `log_path` (read it with `keepalived_log`).
    """
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    stem = tmpdir / f"keepalived-{host.ns}"
    conf = stem.with_suffix(".conf")
    conf.write_text(conf_text)
    check_keepalived_conf(host, conf)
    log_path = stem.with_suffix(".log")
    args = [
        "keepalived", "--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
        "--use-file", str(conf),
        "--pid", f"{stem}.pid", "--vrrp_pid", f"{stem}.vrrp.pid", "--checkers_pid", f"{stem}.checkers.pid",
    ]
    with open(log_path, "ab") as log:
        proc = host.popen(args, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def keepalived_log(proc: subprocess.Popen) -> str:
    path = getattr(proc, "log_path", None)
    return Path(path).read_text(errors="replace") if path and Path(path).exists() else ""
