"""The HAID codec (SPEC section 6): `<len(primary)>-<len(backup)>--<primary><backup><id>`, pure and strict.

A HAID is the Apache Linkis "high availability id" of a context: it names the context's primary node, its
backup node and its numeric id in the store, e.g. `4-4--cs-acs-b84835`. Linkis itself decodes it loosely;
here anything that is not the one canonical spelling is malformed, so that `encode(decode(s)) == s` for
every string `decode` accepts:

- each length is ASCII decimal, no sign, no leading zero, 1..64 (the alias length bounds);
- an alias is 1..64 of `[A-Za-z0-9_.-]`, never starts or ends with `-` and never contains `--`: so the
  aliases joined never contain `--` either, and Linkis (which splits a HAID at `--`) parses every HAID
  csserver issues exactly as csserver does;
- the id is ASCII digits without a leading zero, 1..2**63-1 (a store's signed 64-bit key).

`decode` raises `MalformedHaid` (a ValueError) and nothing else, whatever the input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

MAX_ALIAS_LENGTH = 64
MAX_ID = 2**63 - 1
_ALIAS = re.compile(r"[A-Za-z0-9_.\-]{1,64}", re.ASCII)
_HEAD = re.compile(r"([1-9][0-9]?)-([1-9][0-9]?)--", re.ASCII)
_ID = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)


class MalformedHaid(ValueError):
    """A string that is not a HAID, or a triple that cannot be encoded as one; the message says why."""


@dataclass(frozen=True)
class Haid:
    primary: str  # alias of the node whose VIP carries the context
    backup: str  # alias of the node that adopts it when the primary is down
    id: int  # the context's key in the store

    def __str__(self) -> str:
        return encode(self.primary, self.backup, self.id)


def alias_problem(alias: object) -> str | None:
    """Why `alias` cannot be a node alias, or None when it can."""
    if not isinstance(alias, str):
        return f"an alias must be a string, not {type(alias).__name__}"
    if not _ALIAS.fullmatch(alias):
        return f"an alias is 1..{MAX_ALIAS_LENGTH} characters of A-Z a-z 0-9 _ . -"
    if "--" in alias:
        return "an alias must not contain '--'"
    if alias.startswith("-") or alias.endswith("-"):
        # "a-" then "-b" would make "2-2--a--b1", which Linkis splits into three parts and rejects.
        return "an alias must not start or end with '-'"
    return None


def is_alias(alias: object) -> bool:
    return alias_problem(alias) is None


def encode(primary: str, backup: str, id: int) -> str:
    """The HAID of context `id` with these primary and backup aliases; MalformedHaid if one is invalid."""
    for role, alias in (("primary", primary), ("backup", backup)):
        problem = alias_problem(alias)
        if problem:
            raise MalformedHaid(f"{role}: {problem}")
    if isinstance(id, bool) or not isinstance(id, int) or not 1 <= id <= MAX_ID:
        raise MalformedHaid(f"id must be an integer 1..{MAX_ID}, not {id!r}")
    return f"{len(primary)}-{len(backup)}--{primary}{backup}{id}"


def decode(text: object) -> Haid:
    """The (primary, backup, id) that `text` names; MalformedHaid when it is not exactly a HAID."""
    if not isinstance(text, str):
        raise MalformedHaid(f"a HAID is a string, not {type(text).__name__}")
    return _decode(text)


@lru_cache(maxsize=4096)  # every request decodes its HAID, and a client sends one HAID many times
def _decode(text: str) -> Haid:
    head = _HEAD.match(text)
    if head is None:
        raise MalformedHaid("must start with <len(primary)>-<len(backup)>-- (lengths 1..64, no leading zero)")
    primary_len, backup_len = int(head[1]), int(head[2])
    if primary_len > MAX_ALIAS_LENGTH or backup_len > MAX_ALIAS_LENGTH:
        raise MalformedHaid(f"alias lengths are 1..{MAX_ALIAS_LENGTH}, not {primary_len} and {backup_len}")
    body = text[head.end():]
    primary = body[:primary_len]
    backup = body[primary_len : primary_len + backup_len]
    digits = body[primary_len + backup_len :]
    for role, alias, length in (("primary", primary, primary_len), ("backup", backup, backup_len)):
        if len(alias) != length:
            raise MalformedHaid(f"too short: the {role} alias should have {length} characters")
        problem = alias_problem(alias)
        if problem:
            raise MalformedHaid(f"{role} {alias!r}: {problem}")
    if not digits:
        raise MalformedHaid("no id after the aliases")
    if not _ID.fullmatch(digits) or int(digits) > MAX_ID:
        raise MalformedHaid(f"the id must be ASCII digits 1..{MAX_ID} without a leading zero, not {digits[:24]!r}")
    return Haid(primary, backup, int(digits))
