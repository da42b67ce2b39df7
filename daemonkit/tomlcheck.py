"""Typed reads from the dict tomllib returns that record a problem and carry on, so one run finds them all.

Each problem is (path, key label, message); the path (keys and array indexes) is what
`toml_positions.Positions.line` turns into a line number. vrrpd's own schema lives in `vrrpd.config`.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import shlex
import stat
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

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


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "console")
MAX_CONFIG_BYTES = 1 << 20  # a config is text an operator wrote; anything bigger is a mistake (or /dev/zero)
T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, printed as `FILE:LINE: key: message`."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key}: {self.message}"


class ConfigError(Exception):
    """A config that must not be run; `problems` holds every problem found, in file order."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def read_config(path: str) -> str:
    """The text of config file `path`: a regular file of UTF-8 text up to MAX_CONFIG_BYTES, else ConfigError
    (a FIFO or a device would otherwise be read forever)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: opening a FIFO must not wait for a writer
        with open(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError([Problem(path, None, "file", "not a regular file")])
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([Problem(path, None, "file", f"cannot read: {exc.strerror or exc}")]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([Problem(path, None, "file", f"larger than {MAX_CONFIG_BYTES} bytes: not a config file")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([Problem(path, line, "file", "not UTF-8 text")]) from None


def check_document(text: str, path: str, check: Callable[[Findings, dict], T | None],
                   findings: Findings | None = None) -> T:
    """Parse `text` as TOML and run `check(findings, data)` on it (with `findings`, or a new Findings); every
    problem found (syntax, checks, or a bug in the checker, which must still not give the operator a
    traceback) raises one ConfigError."""
    from daemonkit.tomlpos import Positions

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(path, str(exc), text)]) from None
    except RecursionError:
        raise ConfigError([Problem(path, None, "toml", "nesting too deep")]) from None
    findings = findings if findings is not None else Findings()
    try:
        result = check(findings, data)
    except Exception as exc:
        findings.add((), "config", f"internal error while checking ({type(exc).__name__}: {exc}); please report")
        result = None
    if findings.found or result is None:
        positions = Positions.of(text)
        problems = [Problem(path, positions.line(where), key, msg) for where, key, msg in findings.found]
        problems.sort(key=lambda p: -1 if p.line is None else p.line)
        raise ConfigError(problems)
    return result


def _syntax_problem(path: str, message: str, text: str) -> Problem:
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if match:
        return Problem(path, int(match[1]), "toml", f"{message[: match.start()]} (column {match[2]})")
    # tomllib names no line at the end of the text (a truncated file): the last line with anything on it.
    last_line = text.rstrip().count("\n") + 1
    return Problem(path, last_line, "toml", re.sub(r"\s*\(at end of document\)$", " at the end of the file", message))


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def key_label(key: str) -> str:
    """`key` as a problem's key label shows it: bare when TOML allows that, else quoted and escaped as TOML
    writes it, so that a key from the file can never break the one-line `FILE:LINE: key: message` shape."""
    return key if _BARE_KEY.fullmatch(key) else quote(key)


def name_label(name: str) -> str:
    """A table's name inside its label (`instance[VI_A]`), quoted when it holds a control character, a
    bracket or a quote (or is long): the label stays one line, and its brackets stay the name's own."""
    plain = len(name) <= 60 and all(ch.isprintable() and ch not in '[]"' for ch in name)
    return name if plain else quote(name)


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
        self.findings.add(where, f"{self.label}.{key_label(key)}" if key else self.label, message)

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

    def choice(self, key: str, choices: Iterable[str], default=REQUIRED) -> str | None:
        """A string that must be one of `choices`."""
        choices = tuple(choices)
        value = self.text(key, default)
        if value is not None and value not in choices:
            self.problem(key, f"must be one of {', '.join(choices)}, not {quote(value)}")
        return value

    def logging(self) -> tuple[str | None, str | None]:
        """`log_format` (json | console; None: console on a terminal, else json) and `log_level`, as both
        daemons take them."""
        return self.choice("log_format", LOG_FORMATS, None), self.choice("log_level", LOG_LEVELS, "info")

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

    def command(self, key: str) -> tuple[str, ...] | None:
        """A command line as its arguments: optional, "" means none, split like a shell would (once, here)."""
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
        return tuple(argv)


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
        label = f"{key}[{name_label(name)}]" if isinstance(name, str) and name else f"{key}[#{index + 1}]"
        results.append((index, check(findings, findings.table((key, index), label, item))))
    return [(index, obj) for index, obj in results if obj is not None]
