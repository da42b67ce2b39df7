"""`vrrpd status` as an operator reads it: one row per instance, then tracking and drop counters."""

from __future__ import annotations


def format_table(status: dict) -> str:
    head = f"router {status.get('router_id')}  pid {status.get('pid')}  vrrpd {status.get('version')}"
    columns = ("INSTANCE", "IFACE", "VRID", "FAM", "STATE", "PRIO", "EFF", "MASTER", "INTERVAL", "SINCE", "VIPS")
    rows = [columns]
    for inst in status.get("instances", []):
        rows.append((
            inst["name"], inst["interface"], str(inst["vrid"]), inst["family"],
            inst["state"], str(inst["priority"]), str(inst["effective_priority"]),
            inst.get("master_address") or "-", f"{inst['master_adver_interval']:g}s", inst["since"],
            ",".join(inst["virtual_ipaddress"]),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = [head, ""] + ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    errors = {}
    for inst in status.get("instances", []):
        for key, value in inst["stats"].items():
            if key.endswith("errors") or key == "invalid_type":
                errors[key] = errors.get(key, 0) + value
    for key, value in status.get("stats", {}).items():
        errors[key] = errors.get(key, 0) + value
    dropped = {k: v for k, v in errors.items() if v}
    tracked = [(inst["name"], {**inst["track"]["interfaces"], **inst["track"]["scripts"],
                               **{f"file {k}": v for k, v in inst["track"].get("files", {}).items()},
                               **{f"process {k}": v for k, v in inst["track"].get("processes", {}).items()}})
               for inst in status.get("instances", []) if "track" in inst]
    if tracked:
        lines.append("")
        lines += [f"track {name}: " + ", ".join(f"{what} {state}" for what, state in states.items())
                  for name, states in tracked]
    changed = [(inst["name"], _changed(inst["options"])) for inst in status.get("instances", []) if "options" in inst]
    if any(opts for _, opts in changed):
        lines.append("")
        lines += [f"options {name}: " + ", ".join(opts) for name, opts in changed if opts]
    lines.append("")
    lines.append("dropped: " + (", ".join(f"{k}={v}" for k, v in sorted(dropped.items())) if dropped else "none"))
    return "\n".join(lines)


_DEFAULTS = {"auth_type": "none", "auth_pass_set": False, "use_vmac": None, "vmac_address": None,
             "vmac_xmit_base": False, "accept_mode": True, "unicast_ttl": 255, "mcast_src_ip": None,
             "dont_track_primary": False, "virtual_ipaddress_excluded": [], "virtual_routes": [], "virtual_rules": []}


def _changed(options: dict) -> list[str]:
    """What an instance sets differently from the defaults, one short item each (the JSON has all of it)."""
    items = []
    for key, default in _DEFAULTS.items():
        value = options.get(key, default)
        if value == default or key in ("auth_pass_set", "vmac_address"):
            continue
        if key == "use_vmac":
            items.append(f"vmac {value} ({options.get('vmac_address')})")
        elif isinstance(value, list):
            items.append(f"{key} {'; '.join(value)}")
        else:
            items.append(f"{key} {str(value).lower() if isinstance(value, bool) else value}")
    return items
