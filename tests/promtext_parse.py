"""A strict little parser for the Prometheus text format 0.0.4, and a status document to render."""

from __future__ import annotations

import re

from vrrpd.core.stats import Stats


def sample_status() -> dict:
    stats_a = Stats(master_transitions=1, adverts_tx=12, checksum_errors=3).as_dict()
    stats_b = Stats(adverts_rx=40, priority_zero_rx=1, ttl_errors=2).as_dict()
    return {
        "router_id": "node-a", "pid": 4242, "version": "0.1.0",
        "instances": [
            {"name": "VI_A", "interface": "eth0", "vrid": 51, "family": "ipv4", "version": 3, "state": "MASTER",
             "priority": 150, "effective_priority": 90, "master_address": "192.0.2.1", "advert_interval": 1.0,
             "master_adver_interval": 1.0, "virtual_ipaddress": ["192.0.2.100/24"],
             "since": "2026-11-22T10:00:00.000Z", "stats": stats_a,
             "track": {"interfaces": {"eth0": "up", "eth1": "down"}, "scripts": {"chk": "up", "later": "pending"},
                       "weights": {"eth1": -30, "chk": -60, "later": 0}}},
            {"name": "VI_B6", "interface": "eth1", "vrid": 52, "family": "ipv6", "version": 3, "state": "BACKUP",
             "priority": 100, "effective_priority": 100, "master_address": "fe80::1", "advert_interval": 0.5,
             "master_adver_interval": 0.25, "virtual_ipaddress": ["2001:db8::100/64"],
             "since": "2026-11-22T10:00:01.000Z", "stats": stats_b},
        ],
        "stats": Stats(vrid_errors=7, version_errors=2).as_dict(),
        "notify": {"completed": 5, "failed": 2, "dropped": 0, "exits": {"0": 5, "1": 1, "timeout": 1},
                   "seconds": 0.75},
    }


SAMPLE_LINE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def parse_labels(text: str) -> dict[str, str]:
    labels, i = {}, 0
    while i < len(text):
        name = LABEL_NAME.match(text, i)
        assert name and text.startswith('="', name.end()), text
        i, value = name.end() + 2, []
        while text[i] != '"':
            if text[i] == "\\":
                value.append(ESCAPES[text[i + 1]])
                i += 2
            else:
                assert text[i] != "\n"
                value.append(text[i])
                i += 1
        assert name.group() not in labels
        labels[name.group()] = "".join(value)
        i += 1
        if i < len(text):
            assert text[i] == ",", text
            i += 1
    return labels


def parse(text: str) -> tuple[dict[str, dict], list[tuple[str, dict, float]]]:
    """(families: name -> {"help", "type"}, samples: (name, labels, value)); asserts the format's rules."""
    assert text.endswith("\n")
    families: dict[str, dict] = {}
    samples, current = [], None
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, help_ = line[len("# HELP "):].split(" ", 1)
            assert name not in families, f"{name} declared twice"
            families[name], current = {"help": help_.replace("\\n", "\n").replace("\\\\", "\\")}, name
        elif line.startswith("# TYPE "):
            name, kind = line[len("# TYPE "):].split(" ")
            assert name == current and "type" not in families[name] and kind in ("gauge", "counter"), line
            families[name]["type"] = kind
        else:
            match = SAMPLE_LINE.fullmatch(line)
            assert match, line
            assert match[1] == current and "type" in families[current], f"{line} is outside its family"
            samples.append((match[1], parse_labels(match[2] or ""), float(match[3])))
    for name, family in families.items():
        assert family.get("type") and family["help"], name
        assert (family["type"] == "counter") == name.endswith("_total"), name
    return families, samples


def value(samples, name: str, **labels) -> float:
    found = [v for n, ls, v in samples if n == name and all(ls.get(k) == str(w) for k, w in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]
