"""keepalived.conf read as keepalived reads it: words, quotes and escapes, `#`/`!` comments, nested blocks.

`parse_keepalived` gives the statement tree `vrrpd.ops.keepalived.convert` turns into vrrpd TOML.
"""

from __future__ import annotations

from dataclasses import dataclass


class KeepalivedParseError(Exception):
    """keepalived.conf syntax this converter cannot read (unbalanced braces or quotes)."""

    def __init__(self, file: str, line: int | None, message: str):
        self.file, self.line, self.message = file, line, message
        super().__init__(f"{file}:{line}: {message}" if line is not None else f"{file}: {message}")


@dataclass
class Stmt:
    """One keepalived statement: its words (quotes removed) on one line, and the block it opens, if any."""

    words: list[str]
    line: int
    text: str  # as written, for comments
    block: list[Stmt] | None = None

    @property
    def keyword(self) -> str:
        return self.words[0] if self.words else ""

    def brief(self) -> str:
        more = " { ... }" if self.block is not None else ""
        return f"{self.text}{more} (line {self.line})"


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "E": "\x1b"}


def _split_line(raw: str, lineno: int, path: str) -> list[tuple[str, str]]:
    """Tokens of one line as (value, kind): kind "w" word, "{" or "}". `#`/`!` at a token start comments."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if ch.isspace():
            i += 1
        elif ch in "#!":
            break
        elif ch in "{}":
            tokens.append((ch, ch))
            i += 1
        else:
            word, i = _word(raw, i, lineno, path)
            tokens.append((word, "w"))
    return tokens


def _word(raw: str, i: int, lineno: int, path: str) -> tuple[str, int]:
    out, quote = [], None
    while i < len(raw):
        ch = raw[i]
        if quote:
            if ch == "\\" and i + 1 < len(raw):
                out.append(_ESCAPES.get(raw[i + 1], raw[i + 1]))
                i += 2
                continue
            if ch == quote:
                quote = None
            else:
                out.append(ch)
        elif ch in "\"'":
            quote = ch
        elif ch.isspace() or ch in "{}":
            break
        else:
            out.append(ch)
        i += 1
    if quote:
        raise KeepalivedParseError(path, lineno, f"unterminated {quote} quote")
    return "".join(out), i


def parse_keepalived(text: str, path: str) -> list[Stmt]:
    """The statement tree of a keepalived.conf; raises KeepalivedParseError on unbalanced braces."""
    root: list[Stmt] = []
    stack: list[tuple[list[Stmt], int]] = [(root, 0)]
    for lineno, raw in enumerate(text.splitlines(), 1):
        words: list[str] = []
        for value, kind in _split_line(raw, lineno, path):
            if kind == "w":
                words.append(value)
                continue
            body = stack[-1][0]
            if words:
                body.append(Stmt(words, lineno, " ".join(words)))
                words = []
            if kind == "{":
                # `vrrp_instance VI_1` may have its `{` on the next line; keepalived accepts that too.
                if not body or body[-1].block is not None:
                    raise KeepalivedParseError(path, lineno, "'{' does not follow a keyword")
                body[-1].block = []
                stack.append((body[-1].block, lineno))
            elif len(stack) == 1:
                raise KeepalivedParseError(path, lineno, "'}' closes no block")
            else:
                stack.pop()
        if words:
            stack[-1][0].append(Stmt(words, lineno, " ".join(words)))
    if len(stack) > 1:
        raise KeepalivedParseError(path, stack[-1][1], "block opened here is never closed with '}'")
    return root
