"""TOML written from plain values: what the keepalived importer prints and what the lab feeds the daemons."""

from __future__ import annotations


def toml_value(value) -> str:
    """A TOML literal for a str, bool, int, float, list or dict."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


def toml_string(text: str) -> str:
    """A basic TOML string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif (ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def dump_tables(tables: dict) -> str:
    """A document of tables (`[name]` for a dict) and arrays of tables (`[[name]]` for a list of dicts)."""
    lines: list[str] = []
    for name, body in tables.items():
        for item in body if isinstance(body, list) else [body]:
            lines += ["", f"[[{name}]]" if isinstance(body, list) else f"[{name}]"]
            lines += [f"{key} = {toml_value(value)}" for key, value in item.items()]
    return "\n".join(lines).lstrip() + "\n"
