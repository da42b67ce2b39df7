"""Hostile config files (issue 6.2): mutated conf/ samples through vrrpd's and csserver's loaders.

Whatever the file holds (wrong types, out-of-range values, unknown keys, broken TOML, a truncated file, random
bytes, invalid UTF-8), the loader returns a config or raises ConfigError, and every problem is one line
`FILE:LINE: key: message`, with the line wherever the file has one to point at. The `check` commands of
both daemons say the same and exit 2, never with a traceback. Example counts are bounded: seconds, not minutes.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import csserver.config
import vrrpd.config
from vrrpd.config import ConfigError

REPO = Path(__file__).resolve().parents[3]
SAMPLES = {
    "vrrpd": [(REPO / "conf" / name).read_text() for name in ("node-a.toml", "node-b.toml")],
    "csserver": [(REPO / "conf" / name).read_text() for name in ("csserver-a.toml", "csserver-b.toml")],
}
LOADERS = {"vrrpd": vrrpd.config, "csserver": csserver.config}
PATH = "/etc/fuzz/daemon.toml"

# One part of a key label: a bare TOML key or a quoted one, optionally with [name], ["name"] or [#n].
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PART = rf'(?:[A-Za-z0-9_-]+|{_QUOTED})(?:\[(?:#\d+|[^\[\]"]+|{_QUOTED})\])?'
KEY = rf"{_PART}(?:\.{_PART})*"
# Problems that have no line to point at: the file as a whole, or something that is not in it.
LINELESS = re.compile(r"^(file: cannot read|toml: nesting too deep|\w+: \[\w+\] is required, missing"
                      r"|instance: at least one \[\[instance\]\] is required"
                      r"|cluster\.backup: names no backup for this node)")  # when there is no [cluster]


def assert_problem_lines(text: str, path: str = PATH) -> None:
    """`text` (several problems, one a line) is made only of well-formed `FILE:LINE: key: message` lines."""
    assert text, "no problem reported"
    assert "Traceback" not in text and "internal error" not in text, text
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(path)}(?::(\d+))?: ({KEY}): (\S.*)", line)
        assert match, f"not FILE:LINE: key: message: {line!r}"
        if match[1] is None:
            assert LINELESS.match(f"{match[2]}: {match[3]}"), f"no line, though the file has one: {line!r}"
        else:
            assert int(match[1]) >= 1, line


def outcome(daemon: str, text: str):
    """The config, or the problems (each checked); never any other exception."""
    try:
        return LOADERS[daemon].parse(text, PATH)
    except ConfigError as exc:
        assert exc.problems
        assert_problem_lines("\n".join(str(p) for p in exc.problems))
        return exc.problems


# ---- mutations of the shipped samples ---------------------------------------------------------------

ASSIGNMENT = re.compile(r"^(\s*)([A-Za-z_][A-Za-z0-9_-]*)(\s*=\s*)(.*)$")
SCALARS = st.one_of(
    st.integers(-(2**64), 2**64).map(str),
    st.sampled_from(["0", "-1", "256", "65536", "1e999", "-0.0", "nan", "inf", "-inf", "0.001", "40.96", "1_000",
                     "0x10", "0o7", "0b1", "true", "false", "1979-05-27", "07:32:00", "1979-05-27T07:32:00Z"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=12).map(lambda s: '"' + s.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'),
    st.sampled_from(['""', '"eth0"', '"192.0.2.1"', '"192.0.2.100/24"', '"2001:db8::1"', '"ff02::12"', '"0.0.0.0:9100"',
                     '"[::]:9100"', '"sqlite:"', '"sqlite:///"', '"postgresql://x y"', '"mysql://x"', '"cs-a"',
                     '"cs--a"', '"a b"', '"a\\nb"', '"\\u0000"', '"chk_csserver"', '"VI_A"', "'''multi\nline'''"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.dictionaries(st.sampled_from(["name", "weight", "cs-a", "cs-b", '"a b"', "x"]), inner, max_size=3).map(
            lambda d: "{ " + ", ".join(f"{k} = {v}" for k, v in d.items()) + " }"),
    ),
    max_leaves=5,
)
KEYS = st.sampled_from(["bogus", "vrid", "name", "alias", "url", "weight", '"a b"', '"a\\nb"', '"x: y"', "[x]",
                        "node", "instance", "script", "global", "cluster"])


@st.composite
def mutated(draw, daemon: str) -> str:
    """A sample with one or more edits of the kinds an operator (or a broken editor) makes."""
    lines = draw(st.sampled_from(SAMPLES[daemon])).splitlines()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["value", "value", "unknown_key", "drop_line", "duplicate_line", "table",
                                     "insert_text"]))
        spot = draw(st.integers(0, len(lines)))
        assignments = [i for i, line in enumerate(lines) if ASSIGNMENT.match(line)]
        if kind == "value" and assignments:
            i = draw(st.sampled_from(assignments))
            indent, key, eq, _ = ASSIGNMENT.match(lines[i]).groups()
            lines[i] = f"{indent}{key}{eq}{draw(VALUES)}"
        elif kind == "unknown_key":
            lines.insert(spot, f"{draw(KEYS)} = {draw(VALUES)}")
        elif kind == "drop_line" and lines:
            del lines[min(spot, len(lines) - 1)]
        elif kind == "duplicate_line" and lines:
            lines.insert(spot, lines[min(spot, len(lines) - 1)])
        elif kind == "table":
            lines.insert(spot, draw(st.sampled_from(["[global]", "[[instance]]", "[[script]]", "[node]", "[cluster]",
                                                     "[store]", "[[node]]", "[instance]", "[x.y]", '["a b"]'])))
        else:
            lines.insert(spot, draw(st.text(st.sampled_from(list('[]{}=",.\'#\\ abc019-_:/\t')), max_size=12)))
    return "\n".join(lines) + "\n"


FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("daemon", ["vrrpd", "csserver"])
def test_the_samples_themselves_are_valid(daemon):
    for text in SAMPLES[daemon]:
        assert not isinstance(outcome(daemon, text), tuple)


@FUZZ
@given(st.data())
def test_mutated_vrrpd_samples_give_a_config_or_well_formed_problems(data):
    outcome("vrrpd", data.draw(mutated("vrrpd")))


@FUZZ
@given(st.data())
def test_mutated_csserver_samples_give_a_config_or_well_formed_problems(data):
    outcome("csserver", data.draw(mutated("csserver")))


@FUZZ
@given(st.sampled_from(["vrrpd", "csserver"]), st.data())
def test_truncated_samples_give_problems_with_a_line(daemon, data):
    text = data.draw(st.sampled_from(SAMPLES[daemon]))
    cut = text[: data.draw(st.integers(0, len(text)))]
    result = outcome(daemon, cut)
    try:
        tomllib.loads(cut)
    except tomllib.TOMLDecodeError:
        [problem] = result  # a syntax error is the one problem, at a line: the file's end at the latest
        assert problem.key == "toml" and problem.line is not None, problem


# Values that are the wrong type or out of range for the key they replace: never accepted, always at that key's line.
WRONG = {
    "vrrpd": [("vrid", ["0", "256", '"51"', "51.0", "true", "[51]", "{ a = 1 }", "-1", "9223372036854775808"]),
              ("priority", ["0", "256", '"high"', "1e2"]), ("advert_interval", ["0", "40.96", "0.005", '"1s"', "nan"]),
              ("virtual_ipaddress", ['"192.0.2.100/24"', "[]", '["224.0.0.1"]', '["192.0.2.1", "2001:db8::1"]', "[1]"]),
              ("interface", ['""', '"eth0:1"', '"a/b"', '"sixteen_chars_xx"', "0"]), ("preempt", ['"yes"', "1"]),
              ("interval", ["0", "-1", "3601", "inf"]), ("weight", ["254", "-254", "0.5"]), ("rise", ["0", "1001"]),
              ("command", ['"curl"', "[]", '[""]', "[1]"]), ("track_script", ['["nope"]', '"chk_csserver"']),
              ("router_id", ['""', "1", '"\\u0000"']), ("log_level", ['"verbose"', "5"]),
              ("garp_repeat", ["101", "-1"]), ("preempt_delay", ["1001", "-0.5"])],
    "csserver": [("alias", ['""', '"cs--a"', '"a b"', '"x' + "y" * 64 + '"', "1", "[]"]),
                 ("listen", ['"9100"', '"localhost:9100"', '"0.0.0.0:0"', '"0.0.0.0:65536"', '"::1:9100"', "9100"]),
                 ("aliases", ['{ "cs-a" = "192.0.2.100/24" }', '{ "cs-a" = "224.0.0.1", "cs-b" = "192.0.2.101" }',
                              '{ "cs-a" = 1 }', '"cs-a"', '{ "cs a" = "192.0.2.1" }']),
                 ("backup", ['{ "cs-a" = "cs-a", "cs-b" = "cs-a" }', '{ "cs-a" = "cs-z", "cs-b" = "cs-a" }', '{ }',
                             '{ "cs-a" = 5, "cs-b" = "cs-a" }']),
                 ("url", ['"sqlite:"', '"sqlite://host/x.db"', '"mysql://x"', '""', "1", '"postgresql://a b c"'])],
}


@pytest.mark.parametrize("daemon", ["vrrpd", "csserver"])
def test_wrong_types_and_ranges_are_reported_at_the_keys_line(daemon):
    for text in SAMPLES[daemon]:
        lines = text.splitlines()
        for key, values in WRONG[daemon]:
            spots = [i for i, line in enumerate(lines) if (m := ASSIGNMENT.match(line)) and m[2] == key]
            assert spots, key
            for value in values:
                changed = list(lines)
                changed[spots[0]] = f"{key} = {value}"
                result = outcome(daemon, "\n".join(changed) + "\n")
                assert isinstance(result, tuple), (key, value)
                assert spots[0] + 1 in {p.line for p in result}, (key, value, [str(p) for p in result])


# ---- bytes: what load() reads from disk --------------------------------------------------------------

@st.composite
def damaged_bytes(draw) -> tuple[str, bytes]:
    daemon = draw(st.sampled_from(["vrrpd", "csserver"]))
    data = bytearray(draw(st.sampled_from(SAMPLES[daemon])).encode())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        chunk = draw(st.one_of(st.binary(min_size=1, max_size=8),
                               st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf", b"\r",
                                                b"\xf4\x90\x80\x80", b"\x80"])))
        if draw(st.booleans()):
            data[at:at] = chunk
        else:
            data[at : at + len(chunk)] = chunk
    return daemon, bytes(data)


@FUZZ
@given(damaged_bytes())
@example(("vrrpd", b""))
@example(("csserver", b"\xef\xbb\xbf[node]\n"))
@example(("vrrpd", bytes(range(256))))
def test_damaged_bytes_on_disk_give_a_config_or_well_formed_problems(tmp_path, sample):
    daemon, data = sample
    path = tmp_path / "daemon.toml"
    path.write_bytes(data)
    try:
        LOADERS[daemon].load(str(path))
    except ConfigError as exc:
        assert_problem_lines("\n".join(str(p) for p in exc.problems), str(path))
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            [problem] = exc.problems
            assert (problem.key, problem.line) == ("file", data.count(b"\n", 0, bad.start) + 1), problem


# ---- the real commands ----------------------------------------------------------------------------

HOSTILE_FILES = {
    "invalid_utf8": b'[global]\nrouter_id = "n\xe9"\n',
    "truncated": None,  # the sample cut in the middle of a value
    "wrong_type": None,  # the sample with a string where a number belongs (or the reverse)
    "deep_nesting": b"x = " + b"[" * 3000 + b"]" * 3000 + b"\n",
    "newline_in_a_name": None,  # a table name or quoted key that would split a problem over two lines
}


def hostile_file(daemon: str, kind: str) -> bytes:
    sample = SAMPLES[daemon][0]
    if kind == "truncated":  # in the middle of the first VIP's value, as a half-written file would be
        start = next(m.start() for m in re.finditer("192.0.2.100", sample)
                     if "#" not in sample[: m.start()].rsplit("\n", 1)[1])
        return sample[: start + 5].encode()
    if kind == "wrong_type":
        old, new = ("vrid = 51", 'vrid = "fifty-one"') if daemon == "vrrpd" else ('alias = "cs-a"', "alias = 51")
        return sample.replace(old, new).encode()
    if kind == "newline_in_a_name":
        if daemon == "vrrpd":
            return sample.replace('name = "VI_A"', 'name = "VI\\nA: x"').replace("vrid = 51", "vrid = 0").encode()
        return sample.replace("[node]", '[node]\n"evil\\nkey: x" = 1').encode()
    return HOSTILE_FILES[kind]


@pytest.mark.parametrize("daemon", ["vrrpd", "csserver"])
@pytest.mark.parametrize("kind", [*HOSTILE_FILES, "missing"])
def test_check_command_exits_2_with_problem_lines_and_no_traceback(tmp_path, daemon, kind):
    path = tmp_path / "daemon.toml"
    if kind != "missing":
        path.write_bytes(hostile_file(daemon, kind))
    proc = subprocess.run([sys.executable, "-m", daemon, "check", "-c", str(path)], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert_problem_lines(proc.stderr.rstrip("\n"), str(path))
