"""csserver's TOML configuration (SPEC section 6): parsed once into frozen dataclasses, every check done here.

    [node]
    alias = "cs-a"                 # this node's alias (a HAID alias: 1..64 of A-Z a-z 0-9 _ . -)
    listen = "0.0.0.0:9100"        # HOST:PORT, HOST an IP address ("[::]:9100" for IPv6)
    token_file = "/etc/csserver/token"   # optional: clients must send `Authorization: Bearer <token>`
    max_body_bytes = 1048576       # optional: larger request bodies get 413
    log_format = "json"            # optional: "json" | "console" (default: console on a tty)
    log_level = "info"             # optional
    [cluster]
    aliases = { "cs-a" = "192.0.2.100", "cs-b" = "192.0.2.101" }   # alias -> the VIP carrying its contexts
    backup  = { "cs-a" = "cs-b", "cs-b" = "cs-a" }                 # alias -> the alias that adopts them
    [store]
    url = "sqlite:///var/lib/csserver/contexts.db"   # or postgresql://user@host/db

Problems are reported like vrrpd's, `FILE:LINE: key: message`, all of them at once (`ConfigError`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from types import MappingProxyType
from typing import Mapping
from urllib.parse import urlsplit

from csserver.haid import alias_problem
from daemonkit.tomlcheck import (
    ConfigError, Findings, Problem, Table, check_document, describe, key_label, quote, read_config, unknown,
)
from daemonkit.net import parse_host_port
from daemonkit.tomlpos import Positions

Address = IPv4Address | IPv6Address

DEFAULT_LISTEN = "0.0.0.0:9100"
DEFAULT_MAX_BODY_BYTES = 1 << 20
MAX_MAX_BODY_BYTES = 64 << 20
_TABLES = ("node", "cluster", "store")

__all__ = ["Config", "ConfigError", "Problem", "load", "parse", "read_token", "parse_store_url"]


@dataclass(frozen=True)
class NodeConfig:
    alias: str
    listen_host: str  # an IP address literal, without brackets
    listen_port: int
    token_file: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    log_format: str | None = None
    log_level: str = "info"


@dataclass(frozen=True)
class ClusterConfig:
    """Which VIP carries each alias's contexts, and which alias adopts them when that node is down."""

    aliases: Mapping[str, Address] = field(default_factory=lambda: MappingProxyType({}))
    backup: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def vip(self, alias: str) -> Address | None:
        return self.aliases.get(alias)

    def backup_of(self, alias: str) -> str | None:
        return self.backup.get(alias)

    def known(self, alias: str) -> bool:
        """An alias the cluster names (with a VIP, or with a backup of its own)."""
        return alias in self.aliases or alias in self.backup

    def partners(self, me: str) -> frozenset[str]:
        """The aliases `me` is backup of, and `me`'s own backup: the nodes it must share a store with."""
        mine = {alias for alias, partner in self.backup.items() if partner == me}
        own_backup = self.backup.get(me)
        return frozenset(mine | ({own_backup} if own_backup else set())) - {me}

    def alias_of_vip(self, address: Address) -> str | None:
        for alias, vip in self.aliases.items():
            if vip == address:
                return alias
        return None


@dataclass(frozen=True)
class StoreConfig:
    url: str
    kind: str  # "sqlite" | "postgresql"
    sqlite_path: str | None = None


@dataclass(frozen=True)
class Config:
    path: str
    node: NodeConfig
    cluster: ClusterConfig
    store: StoreConfig

    @property
    def standalone(self) -> bool:
        """SPEC 6 step 3: a node whose own alias has no VIP skips the VIP check and serves what it is given."""
        return self.cluster.vip(self.node.alias) is None


def load(path: str) -> Config:
    """Read and check `path`; an unreadable, oversized or non-UTF-8 file is a ConfigError too."""
    return parse(read_config(path), path)


def parse(text: str, path: str = "<string>") -> Config:
    """Check `text` as a csserver config; raises ConfigError listing every problem found."""
    return check_document(text, path, lambda findings, data: _document(findings, data, path))


def read_token(config: Config) -> str | None:
    """The bearer token of `[node] token_file` (None when not set); ConfigError if it is unusable."""
    path = config.node.token_file
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError([_token_problem(config, f"cannot read {path}: {reason}")]) from None
    if not token or not all(33 <= ord(ch) <= 126 for ch in token):
        raise ConfigError([_token_problem(config, f"{path} must hold one token of printable ASCII without spaces")])
    return token


def _token_problem(config: Config, message: str) -> Problem:
    """A problem at the config's `token_file` line (found again in the file: the Config keeps no lines)."""
    try:
        with open(config.path, encoding="utf-8") as fh:
            line = Positions.of(fh.read()).line(("node", "token_file"))
    except (OSError, UnicodeDecodeError):
        line = None  # parsed from a string, or the file changed meanwhile
    return Problem(config.path, line, "node.token_file", message)


def _document(findings: Findings, data: dict, path: str) -> Config | None:
    for key in data:
        if key not in _TABLES:
            findings.add((key,), key_label(key), unknown(key, _TABLES, "table"))
    node = _node(_table(findings, data, "node", required=True))
    cluster = _cluster(_table(findings, data, "cluster", required=False), node)
    store = _store(_table(findings, data, "store", required=True))
    if findings.found or node is None or cluster is None or store is None:
        return None
    return Config(path, node, cluster, store)


def _table(findings: Findings, data: dict, name: str, required: bool) -> Table | None:
    if name not in data:
        if required:
            findings.add((), name, f"[{name}] is required, missing")
            return None
        return findings.table((name,), name, {})
    value = data[name]
    if not isinstance(value, dict):
        findings.add((name,), name, f"must be a table ([{name}]), not {describe(value)}")
        return None
    return findings.table((name,), name, value)


def _node(t: Table | None) -> NodeConfig | None:
    if t is None:
        return None
    t.only(("alias", "listen", "token_file", "max_body_bytes", "log_format", "log_level"))
    alias = t.text("alias")
    if alias is not None and alias_problem(alias):
        t.problem("alias", f"{quote(alias)}: {alias_problem(alias)}")
    listen = t.text("listen", DEFAULT_LISTEN)
    host_port = parse_host_port(listen) if listen is not None else None
    if listen is not None and host_port is None:
        t.problem("listen", f'must be IP:PORT (e.g. "0.0.0.0:9100" or "[::]:9100"), not {quote(listen)}')
    token_file = t.text("token_file", None)
    max_body = t.integer("max_body_bytes", 1024, MAX_MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES)
    log_format, log_level = t.logging()
    if t.bad:
        return None
    return NodeConfig(alias, host_port.host, host_port.port, token_file, max_body, log_format, log_level)


def _cluster(t: Table | None, node: NodeConfig | None) -> ClusterConfig | None:
    if t is None:
        return None
    t.only(("aliases", "backup"))
    aliases = _alias_map(t, "aliases", _vip_value)
    backup = _alias_map(t, "backup", _alias_value)
    if aliases is not None:
        seen: dict[Address, str] = {}
        for alias, vip in aliases.items():
            if vip in seen:
                t.problem("aliases", f"{vip} is the VIP of both {quote(seen[vip])} and {quote(alias)}", (alias,))
            seen[vip] = alias
    if aliases is not None and backup is not None:
        known = set(aliases) | set(backup)
        for alias, partner in backup.items():
            if partner == alias:
                t.problem("backup", f"{quote(alias)} cannot be its own backup", (alias,))
            elif partner not in known:
                t.problem("backup", f"{quote(partner)} is unknown: name it in [cluster] aliases", (alias,))
        if node is not None and node.alias not in backup:
            t.problem("backup", f"names no backup for this node ({quote(node.alias)}): contexts created here "
                                "need one")
    if t.bad or aliases is None or backup is None:
        return None
    return ClusterConfig(MappingProxyType(aliases), MappingProxyType(backup))


def _alias_map(t: Table, key: str, check_value) -> dict | None:
    table = t.get(key, "a table", {})
    if table is None:
        return None
    result = {}
    for alias, value in table.items():
        problem = alias_problem(alias)
        if problem:
            t.problem(key, f"{quote(alias)}: {problem}", (alias,))
            continue
        checked = check_value(t, key, alias, value)
        if checked is not None:
            result[alias] = checked
    return result


def _vip_value(t: Table, key: str, alias: str, value) -> Address | None:
    if not isinstance(value, str):
        t.problem(key, f"the VIP of {quote(alias)} must be a string, not {describe(value)}", (alias,))
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        t.problem(key, f"the VIP of {quote(alias)} must be an IP address without a prefix length, not "
                       f"{quote(value)}", (alias,))
        return None
    if address.is_unspecified or address.is_multicast:
        t.problem(key, f"the VIP of {quote(alias)} must be a unicast address, not {address}", (alias,))
        return None
    return address


def _alias_value(t: Table, key: str, alias: str, value) -> str | None:
    if not isinstance(value, str):
        t.problem(key, f"the backup of {quote(alias)} must be a string, not {describe(value)}", (alias,))
        return None
    problem = alias_problem(value)
    if problem:
        t.problem(key, f"the backup of {quote(alias)}, {quote(value)}: {problem}", (alias,))
        return None
    return value


def _store(t: Table | None) -> StoreConfig | None:
    if t is None:
        return None
    t.only(("url",))
    url = t.text("url")
    if url is None:
        return None
    parsed = parse_store_url(url)
    if isinstance(parsed, str):
        t.problem("url", parsed)
        return None
    return parsed


def parse_store_url(url: str) -> StoreConfig | str:
    """The store a URL names, or a message saying why it names none.

    `sqlite:///var/lib/x.db` is the absolute path /var/lib/x.db (SPEC 6); `sqlite:x.db` a path relative to
    the working directory. `postgresql://` (or `postgres://`) URLs go to libpq as they are."""
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        parts = urlsplit(url)
        if parts.netloc or parts.query or parts.fragment:
            return f'a SQLite URL is sqlite:///ABSOLUTE/PATH or sqlite:RELATIVE/PATH, not {quote(url)}'
        if not parts.path or parts.path.endswith("/"):
            return f"names no database file: {quote(url)}"
        return StoreConfig(url, "sqlite", parts.path)
    if scheme in ("postgresql", "postgres"):
        from psycopg.conninfo import conninfo_to_dict  # checks the syntax without connecting

        try:
            conninfo_to_dict(url)
        except Exception as exc:  # psycopg.ProgrammingError: a bad URL
            return f"not a valid PostgreSQL URL: {exc}"
        return StoreConfig(url, "postgresql")
    return f"must start with sqlite: or postgresql:, not {quote(url)}"
