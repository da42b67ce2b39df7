"""The Prometheus text exposition format (0.0.4): metric families with HELP and TYPE, escaped labels."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    """One metric family: its HELP and TYPE lines, then its samples as (labels, value)."""

    name: str
    kind: str  # "gauge" | "counter" | "histogram"
    help: str
    samples: list[tuple[str, Labels, int | float]] = field(default_factory=list)

    def add(self, labels: Iterable[tuple[str, object]], value, suffix: str = "") -> None:
        """One sample; a missing or non-numeric value gives no sample rather than a wrong 0."""
        if isinstance(value, (int, float)):
            self.samples.append((suffix, tuple((k, str(v)) for k, v in labels), value))

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        out += [f"{self.name}{suffix}{label_text(labels)} {number(value)}" for suffix, labels, value in self.samples]
        return out


def render(families: Iterable[Family]) -> str:
    return "".join(line + "\n" for family in families for line in family.lines())


def label_text(labels: Labels) -> str:
    """`{a="1",b="x"}`, or nothing for no labels."""
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{escape_label(value)}"' for key, value in labels) + "}"


def metric_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def number(value) -> str:
    if isinstance(value, int):  # bool too
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")
