"""Line numbers for TOML values: tomllib gives none, so this re-reads text it accepted to find them.

    positions = Positions.of(text)                 # never raises
    positions.line(("instance", 1, "vrid"))       # line of the second [[instance]]'s vrid, or None

A path is the chain of keys (str) and array indexes (int) that leads to a value in the dict tomllib returns.
"""

from __future__ import annotations

import re
import tomllib
from bisect import bisect_right

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_WS = " \t"


class _Node:
    """The line of one table, key or array element, and its children (dict for tables, list for arrays)."""

    __slots__ = ("line", "kids")

    def __init__(self, line: int | None, kids: dict | list | None = None):
        self.line, self.kids = line, kids


class Positions:
    """Where each table, key and array element of one TOML text starts (1-based lines)."""

    def __init__(self, root: _Node):
        self._root = root

    @classmethod
    def of(cls, text: str) -> Positions:
        """The positions in `text`, which tomllib must have accepted; any surprise leaves them empty."""
        try:
            return cls(_Reader(text).document())
        except Exception:  # includes RecursionError on absurd nesting
            return cls(_Node(None, {}))

    def line(self, where: tuple) -> int | None:
        """The line of the deepest element of `where` found; None when not even the first is."""
        node, line = self._root, None
        for part in where:
            kids = node.kids
            if isinstance(kids, dict) and part in kids:
                node = kids[part]
            elif isinstance(kids, list) and isinstance(part, int) and 0 <= part < len(kids):
                node = kids[part]
            else:
                break
            if node.line is not None:
                line = node.line
        return line


class _Reader:
    """Mirrors tomllib's structure (dotted keys, [table], [[array of tables]], inline tables and arrays)
    but trusts the syntax, so it stays short. Problems are reported without a line rather than not at all,
    so a surprise raises and `Positions.of` gives up."""

    def __init__(self, text: str):
        self.s, self.i = text, 0
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.root = _Node(None, {})

    def _line_at(self, index: int) -> int:
        return bisect_right(self.starts, index)

    def _skip(self, newlines: bool = True) -> None:
        s = self.s
        while self.i < len(s):
            ch = s[self.i]
            if ch in _WS or (newlines and ch in "\r\n"):
                self.i += 1
            elif ch == "#":
                end = s.find("\n", self.i)
                self.i = len(s) if end < 0 else end
            else:
                return

    def document(self) -> _Node:
        s, current = self.s, self.root
        while True:
            self._skip()
            if self.i >= len(s):
                return self.root
            line = self._line_at(self.i)
            if s[self.i] == "[":
                many = s.startswith("[[", self.i)
                self.i += 2 if many else 1
                parts = self._keys()
                self.i += 2 if many else 1
                current = self._table(parts, line, many)
            else:
                parts = self._keys()
                self.i += 1  # "="
                self._skip(newlines=False)
                value = self._value()
                self._descend(current, parts[:-1], line).kids[parts[-1]] = _Node(line, value.kids)

    def _table(self, parts: list[str], line: int, many: bool) -> _Node:
        if not many:
            node = self._descend(self.root, parts, line)
            node.line = line
            return node
        parent = self._descend(self.root, parts[:-1], line)
        array = parent.kids.setdefault(parts[-1], _Node(line, []))
        node = _Node(line, {})
        array.kids.append(node)
        return node

    @staticmethod
    def _descend(node: _Node, parts: list[str], line: int) -> _Node:
        for part in parts:
            child = node.kids.setdefault(part, _Node(line, {}))
            node = child.kids[-1] if isinstance(child.kids, list) else child
        return node

    def _keys(self) -> list[str]:
        parts = []
        while True:
            self._skip(newlines=False)
            start = self.i
            if self.s[start] in "\"'":
                self._string()
                parts.append(tomllib.loads("k = " + self.s[start : self.i])["k"])
            else:
                match = _BARE_KEY.match(self.s, start)
                self.i = match.end()
                parts.append(match.group())
            self._skip(newlines=False)
            if self.s[self.i] != ".":
                return parts
            self.i += 1

    def _string(self) -> None:
        s, i = self.s, self.i
        quote = s[i]
        if s.startswith(quote * 3, i):
            j = i + 3
            while not s.startswith(quote * 3, j):
                j += 2 if quote == '"' and s[j] == "\\" else 1
            j += 3
            while j < len(s) and s[j] == quote and j - i < 8:  # up to two quotes may end the content
                j += 1
        else:
            j = i + 1
            while s[j] != quote:
                j += 2 if quote == '"' and s[j] == "\\" else 1
            j += 1
        self.i = j

    def _value(self) -> _Node:
        s = self.s
        ch = s[self.i]
        if ch in "\"'":
            self._string()
            return _Node(None)
        if ch == "[":
            return self._array()
        if ch == "{":
            return self._inline_table()
        while self.i < len(s) and s[self.i] not in ",]}#\r\n":
            self.i += 1
        return _Node(None)

    def _array(self) -> _Node:
        self.i += 1
        items: list[_Node] = []
        while True:
            self._skip()
            if self.s[self.i] == "]":
                self.i += 1
                return _Node(None, items)
            line = self._line_at(self.i)
            items.append(_Node(line, self._value().kids))
            self._skip()
            if self.s[self.i] == ",":
                self.i += 1

    def _inline_table(self) -> _Node:
        self.i += 1
        node = _Node(None, {})
        while True:
            self._skip()
            if self.s[self.i] == "}":
                self.i += 1
                return node
            line = self._line_at(self.i)
            parts = self._keys()
            self.i += 1  # "="
            self._skip()
            value = self._value()
            self._descend(node, parts[:-1], line).kids[parts[-1]] = _Node(line, value.kids)
            self._skip()
            if self.s[self.i] == ",":
                self.i += 1
