"""Apache Linkis's reading of a HAID, re-implemented from its documented behaviour, for property tests.

Linkis (`CSHighAvailableUtils.checkHAIDBasicFormat` and `decodeHAID`) splits the HAID with Java's
`String.split("--")` (trailing empty strings dropped), needs exactly two parts, reads the lengths of the
first part split at `-` with `Integer.parseInt` (a sign, leading zeros and any Unicode decimal digit
pass), needs their sum below the second part's length and the rest to be `StringUtils.isNumeric`
(Unicode digits), then slices the aliases in order. Lengths are UTF-16 code units, as Java's are.
A multi-backup HAID decodes to its primary and first backup, as Linkis's `decodeHAID` does.
"""

from __future__ import annotations

import unicodedata


def java_split(text: str, separator: str) -> list[str]:
    """Java's String.split with a literal separator: trailing empty strings are removed."""
    parts = text.split(separator)
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def java_parse_int(text: str) -> int | None:
    """Integer.parseInt(text, 10), or None where Java throws NumberFormatException."""
    if not text:
        return None
    sign, digits = 1, text
    if text[0] in "+-":
        sign, digits = (-1 if text[0] == "-" else 1), text[1:]
    if not digits or not all(unicodedata.decimal(ch, None) is not None for ch in digits):
        return None
    value = sign * int("".join(str(unicodedata.decimal(ch)) for ch in digits))
    return value if -(2**31) <= value < 2**31 else None


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def linkis_decode(haid: str) -> tuple[str, str, int] | None:
    """(primary, backup, id) as Linkis decodes `haid`, or None where Linkis rejects it (or would throw)."""
    parts = java_split(haid, "--")
    if len(parts) != 2:
        return None
    lengths = [java_parse_int(p) for p in java_split(parts[0], "-")]
    if len(lengths) < 2 or any(n is None for n in lengths):
        return None
    body = parts[1]
    if any(ch > "\uffff" for ch in body):  # keep the slicing below in UTF-16 units: astral text is not a HAID here
        return None
    if sum(lengths) >= utf16_length(body) or any(n < 0 for n in lengths):
        return None  # Java: format check fails, or substring throws on a negative length
    rest = body[sum(lengths):]
    if not rest or not all(unicodedata.decimal(ch, None) is not None for ch in rest):
        return None
    aliases, start = [], 0
    for n in lengths:
        aliases.append(body[start:start + n])
        start += n
    return aliases[0], aliases[1], int("".join(str(unicodedata.decimal(ch)) for ch in rest))
