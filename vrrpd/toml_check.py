"""Typed reads from the dict tomllib returns that record a problem and carry on, so one run finds them all.

Each problem is (path, key label, message); the path (keys and array indexes) is what
`toml_positions.Positions.line` turns into a line number. vrrpd's own schema lives in `vrrpd.config`.
"""

from __future__ import annotations

import difflib
import math
import shlex
from collections.abc import Callable, Iterable

REQUIRED = object()  # `default` meaning: a missing key is a problem
_KINDS = {
    "an integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "a number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "a boolean": lambda v: isinstance(v, bool),
    "a string": lambda v: isinstance(v, str),
    "an array": lambda v: isinstance(v, list),
    "a table": lambda v: isinstance(v, dict),
}


def describe(value) -> str:
    """What a TOML value is, for a message: `an integer (5)`, `a string ("x")`, `a table`."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        return f"a string ({quote(value)})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a date/time ({value})"


def quote(text: str, limit: int = 60) -> str:
    """`text` in double quotes as TOML would write it, control characters escaped, cut at `limit`."""
    shown = text if len(text) <= limit else text[:limit] + "..."
    escaped = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in shown)
    return '"' + escaped.replace('"', '\\"') + '"'


def unknown(key: str, known: Iterable[str], what: str = "key") -> str:
    """The message for an unknown key: the closest known one, else the whole list."""
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(known)})"
    return f"unknown {what}{hint}"


class Findings:
    """Collects (position path, key label, message) for every problem in one document."""

    def __init__(self):
        self.found: list[tuple[tuple, str, str]] = []

    def add(self, where: tuple, key: str, message: str) -> None:
        self.found.append((where, key, message))

    def table(self, where: tuple, label: str, data: dict) -> Table:
        return Table(self, where, label, data)


class Table:
    """One TOML table under check: typed reads that record a problem and return None instead of raising.

    `bad` turns true at the first problem, so the caller knows not to build an object from the reads."""

    def __init__(self, findings: Findings, where: tuple, label: str, data: dict):
        self.findings, self.where, self.label, self.data = findings, where, label, data
        self.bad = False

    def problem(self, key: str | None, message: str, sub: tuple = ()) -> None:
        self.bad = True
        where = self.where + ((key,) if key else ()) + sub
        self.findings.add(where, f"{self.label}.{key}" if key else self.label, message)

    def only(self, known: Iterable[str]) -> None:
        known = tuple(known)
        for key in self.data:
            if key not in known:
                self.problem(key, unknown(key, known))

    def get(self, key: str, kind: str, default=REQUIRED):
        if key not in self.data:
            if default is REQUIRED:
                self.problem(key, "required, missing")
                return None
            return default
        value = self.data[key]
        if not _KINDS[kind](value):
            self.problem(key, f"must be {kind}, not {describe(value)}")
            return None
        if kind == "a number" and not math.isfinite(value):
            self.problem(key, f"must be a finite number, not {value}")
            return None
        return value

    def integer(self, key: str, low: int, high: int, default=REQUIRED) -> int | None:
        value = self.get(key, "an integer", default)
        if value is not None and not low <= value <= high:
            self.problem(key, f"must be {low}..{high}, not {value}")
            return None
        return value

    def number(self, key: str, low: float, high: float, default=REQUIRED, low_open: bool = False):
        """A duration in seconds, low..high (or more than low, with `low_open`), as a float."""
        value = self.get(key, "a number", default)
        if value is None:
            return None
        if value < low or value > high or (low_open and value == low):
            rng = f"more than {low:g} and at most {high:g}" if low_open else f"{low:g}..{high:g}"
            self.problem(key, f"must be {rng} seconds, not {value:g}")
            return None
        return float(value)

    def text(self, key: str, default=REQUIRED, empty_ok: bool = False) -> str | None:
        value = self.get(key, "a string", default)
        if value is None:
            return None
        if not value and not empty_ok:
            self.problem(key, "must not be empty")
            return None
        if "\x00" in value:
            self.problem(key, "must not contain a NUL character")
            return None
        return value

    def strings(self, key: str, default=REQUIRED) -> list[tuple[int, str]] | None:
        """An array of strings, as (index, value) pairs; a bad element is reported at its own line."""
        values = self.get(key, "an array", default)
        if values is None:
            return None
        good = []
        for index, value in enumerate(values):
            if isinstance(value, str):
                good.append((index, value))
            else:
                self.problem(key, f"elements must be strings, not {describe(value)}", (index,))
        return good

    def command(self, key: str) -> str | None:
        """A command line: optional, "" means none, must split into arguments like a shell would."""
        value = self.text(key, None, empty_ok=True)
        if not value:
            return None
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            self.problem(key, f"cannot be split into arguments: {exc}")
            return None
        if not argv:
            self.problem(key, "holds no command")
            return None
        return value


def check_list(findings: Findings, data: dict, key: str, check: Callable) -> list[tuple[int, object]]:
    """An array of tables ([[key]]): each element checked by `check(findings, table)`; the good results
    (not None) with their index."""
    items = data.get(key, [])
    if isinstance(items, dict):
        findings.add((key,), key, f"must be an array of tables: write [[{key}]], not [{key}]")
        return []
    if not isinstance(items, list):
        findings.add((key,), key, f"must be an array of tables ([[{key}]]), not {describe(items)}")
        return []
    results = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            findings.add((key, index), key, f"elements must be tables, not {describe(item)}")
            continue
        name = item.get("name")
        label = f"{key}[{name}]" if isinstance(name, str) and name else f"{key}[#{index + 1}]"
        results.append((index, check(findings, findings.table((key, index), label, item))))
    return [(index, obj) for index, obj in results if obj is not None]
