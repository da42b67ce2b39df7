"""The man pages and bash completions the packages ship say what the commands and config files really take:
every key the config checkers accept, every command and option the parsers accept, and they render cleanly.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

import pytest

from csserver.cli import build_parser as csserver_parser
from csserver.config import ConfigError as CsConfigError, parse as csserver_parse
from tests.support import REPO, require, require_program
from vrrpd.config import ConfigError, parse as vrrpd_parse
from vrrpd.ops.cli import build_parser as vrrpd_parser

MAN = REPO / "man"
COMPLETIONS = REPO / "completions"
BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"
UNKNOWN = "zz_unknown"

# One unknown key in every table: the checkers answer with the keys they know.
VRRPD_PROBE = f"""{UNKNOWN} = 1
[global]
{UNKNOWN} = 1
[[script]]
name = "s"
command = ["/bin/true"]
{UNKNOWN} = 1
[[track_file]]
name = "f"
file = "/f"
{UNKNOWN} = 1
[[track_process]]
name = "p"
process = "p"
{UNKNOWN} = 1
[[instance]]
name = "VI_1"
interface = "eth0"
vrid = 1
virtual_ipaddress = ["192.0.2.1/24"]
track_interface = [{{ name = "eth1", {UNKNOWN} = 1 }}]
{UNKNOWN} = 1
[[sync_group]]
name = "g"
instances = ["VI_1"]
{UNKNOWN} = 1
"""
CSSERVER_PROBE = f"""{UNKNOWN} = 1
[node]
alias = "cs-a"
{UNKNOWN} = 1
[cluster]
{UNKNOWN} = 1
[store]
url = "sqlite:///x.db"
{UNKNOWN} = 1
"""


def known_keys(parse, error, text: str) -> dict[str, list[str]]:
    """table label -> the keys its checker knows, read from its "unknown key (known: ...)" problems."""
    with pytest.raises(error) as raised:
        parse(text, "probe.toml")
    found = {}
    for problem in raised.value.problems:
        match = re.search(rf": (\S*?){UNKNOWN}: unknown (?:key|table) \(known: (.*)\)$", str(problem))
        assert match, problem
        table = re.sub(r"\[[^]]*\]", "", match.group(1)).rstrip(".") or "(top level)"
        found[table] = match.group(2).split(", ")
    return found


def rendered(page: str) -> str:
    require_program("groff")
    proc = subprocess.run(["groff", "-man", "-ww", "-Tutf8", "-P-cbou", str(MAN / page)], capture_output=True,
                          text=True, timeout=30, env={"LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr  # no groff warning either
    return proc.stdout.replace("\u2010", "-")  # groff's hyphen


def sections(text: str) -> dict[str, str]:
    """A rendered page's sections by heading (headings start at column 0)."""
    parts = re.split(r"(?m)^(\S.*)$", text)
    return {head.strip(): body for head, body in zip(parts[1::2], parts[2::2])}


@pytest.mark.parametrize("page", ["man8/vrrpd.8", "man5/vrrpd.toml.5", "man8/csserver.8", "man5/csserver.toml.5"])
def test_man_pages_render_without_warnings(page):
    assert "NAME" in sections(rendered(page))


def test_vrrpd_toml_5_documents_every_key_the_checker_accepts():
    page = sections(rendered("man5/vrrpd.toml.5"))
    keys = known_keys(vrrpd_parse, ConfigError, VRRPD_PROBE)
    assert keys.pop("(top level)") == ["global", "script", "track_file", "track_process", "instance", "sync_group"]
    heading = {"global": "[global]", "script": "[[script]]", "instance": "[[instance]]",
               "instance.track_interface": "[[instance]]", "sync_group": "[[sync_group]]",
               "track_file": "[[track_file]]", "track_process": "[[track_process]]"}
    missing = {table: [k for k in names if not re.search(rf"\b{k}\b", page[heading[table]])]
               for table, names in keys.items()}
    assert missing == {table: [] for table in keys}


def test_csserver_toml_5_documents_every_key_the_checker_accepts():
    page = sections(rendered("man5/csserver.toml.5"))
    keys = known_keys(csserver_parse, CsConfigError, CSSERVER_PROBE)
    assert keys.pop("(top level)") == ["node", "cluster", "store"]
    missing = {table: [k for k in names if not re.search(rf"\b{k}\b", page[f"[{table}]"])]
               for table, names in keys.items()}
    assert missing == {table: [] for table in keys}


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], set[str]]:
    """(subcommand path) -> the options and subcommands the parser accepts right there."""
    found: dict[tuple[str, ...], set[str]] = {path: set()}
    for action in parser._actions:
        found[path] |= set(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[path].add(name)
                found |= commands(sub, (*path, name))
    return found


@pytest.mark.parametrize("name,parser", [("vrrpd", vrrpd_parser), ("csserver", csserver_parser)])
def test_the_man_page_names_every_command_and_option(name, parser):
    text = rendered(f"man8/{name}.8")
    words = set().union(*commands(parser()).values()) - {"-h", "--help"}
    assert [w for w in sorted(words) if not re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text)] == []


def complete(name: str, words: list[str]) -> set[str]:
    """What bash-completion offers for the command line `words` (the last one being typed)."""
    require_program("bash")
    script = f"""
source {BASH_COMPLETION}
source {COMPLETIONS / name}
COMP_WORDS=({" ".join(f"'{w}'" for w in words)})
COMP_CWORD={len(words) - 1}
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
_{name}
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


@pytest.mark.parametrize("name,parser", [("vrrpd", vrrpd_parser), ("csserver", csserver_parser)])
def test_bash_completion_offers_every_command_and_option_where_the_parser_takes_it(name, parser):
    require(None if Path(BASH_COMPLETION).exists() else "bash-completion is not installed")
    for path, accepted in commands(parser()).items():
        options = {w for w in accepted if w.startswith("-")} - {"-h"}  # -h: --help is offered instead
        assert complete(name, [name, *path, "-"]) == options, path
        assert accepted - options - {"-h"} <= complete(name, [name, *path, ""]), path  # the subcommands
