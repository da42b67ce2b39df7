"""csserver's config file: SPEC section 6 keys, every problem as FILE:LINE: key: message, exit 2."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import ip_address
from pathlib import Path

import pytest

from csserver.config import ConfigError, load, parse, parse_store_url, read_token

REPO = Path(__file__).resolve().parents[3]
GOOD = """\
[node]
alias = "cs-a"
listen = "0.0.0.0:9100"
[cluster]
aliases = { "cs-a" = "192.0.2.100", "cs-b" = "192.0.2.101" }
backup  = { "cs-a" = "cs-b", "cs-b" = "cs-a" }
[store]
url = "sqlite:///var/lib/csserver/contexts.db"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, "cs.toml")
    return [str(p) for p in caught.value.problems]


def test_the_spec_example():
    config = parse(GOOD, "cs.toml")
    assert config.node.alias == "cs-a"
    assert (config.node.listen_host, config.node.listen_port) == ("0.0.0.0", 9100)
    assert config.cluster.vip("cs-b") == ip_address("192.0.2.101")
    assert config.cluster.backup_of("cs-a") == "cs-b"
    assert config.store.kind == "sqlite" and config.store.sqlite_path == "/var/lib/csserver/contexts.db"
    assert not config.standalone
    assert config.node.max_body_bytes == 1 << 20 and config.node.token_file is None


def test_the_shipped_sample_configs_are_valid():
    for name in ("csserver-a.toml", "csserver-b.toml"):
        load(str(REPO / "conf" / name))


def test_standalone_when_the_node_has_no_vip():
    config = parse(GOOD.replace('"cs-a" = "192.0.2.100", ', ""), "cs.toml")
    assert config.standalone


@pytest.mark.parametrize("old, new, expected", [
    ('alias = "cs-a"', 'alias = "cs--a"', "cs.toml:2: node.alias: \"cs--a\": an alias must not contain '--'"),
    ('alias = "cs-a"', 'alias = 7', "cs.toml:2: node.alias: must be a string, not an integer (7)"),
    ('listen = "0.0.0.0:9100"', 'listen = "0.0.0.0"', "cs.toml:3: node.listen: must be IP:PORT"),
    ('listen = "0.0.0.0:9100"', 'listen = "::1:9100"', "cs.toml:3: node.listen: must be IP:PORT"),
    ('listen = "0.0.0.0:9100"', 'listen = "0.0.0.0:9100"\nlisten_port = 3',
     "cs.toml:4: node.listen_port: unknown key; did you mean 'listen'?"),
    ('"cs-b" = "192.0.2.101" }', '"cs-b" = "192.0.2.101/24" }',
     'cs.toml:5: cluster.aliases: the VIP of "cs-b" must be an IP address without a prefix length'),
    ('"cs-b" = "192.0.2.101" }', '"cs-b" = "192.0.2.100" }',
     'cs.toml:5: cluster.aliases: 192.0.2.100 is the VIP of both "cs-a" and "cs-b"'),
    ('"cs-b" = "cs-a" }', '"cs-b" = "cs-c" }', 'cs.toml:6: cluster.backup: "cs-c" is unknown'),
    ('"cs-b" = "cs-a" }', '"cs-b" = "cs-b" }', 'cs.toml:6: cluster.backup: "cs-b" cannot be its own backup'),
    ('backup  = { "cs-a" = "cs-b", ', 'backup  = { ', 'cs.toml:6: cluster.backup: names no backup for this node ("cs-a")'),
    ('url = "sqlite:///var/lib/csserver/contexts.db"', 'url = "mysql://x"',
     "cs.toml:8: store.url: must start with sqlite: or postgresql:"),
    ('url = "sqlite:///var/lib/csserver/contexts.db"', 'url = "sqlite://host/x.db"',
     "cs.toml:8: store.url: a SQLite URL is sqlite:///ABSOLUTE/PATH"),
    ('[store]\nurl = "sqlite:///var/lib/csserver/contexts.db"\n', '', "cs.toml: store: [store] is required, missing"),
    ('[cluster]', '[clutser]', "cs.toml:4: clutser: unknown table; did you mean 'cluster'?"),
])
def test_each_problem_is_reported_with_its_line(old, new, expected):
    assert old in GOOD
    found = problems(GOOD.replace(old, new))
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported_at_once():
    text = GOOD.replace('alias = "cs-a"', 'alias = ""').replace('"0.0.0.0:9100"', '"x"').replace("sqlite", "nope")
    assert len(problems(text)) == 3


def test_syntax_errors_have_a_line():
    assert problems("[node]\nalias = \n")[0].startswith("cs.toml:2: toml:")


def test_store_urls():
    assert parse_store_url("sqlite:relative/x.db").sqlite_path == "relative/x.db"
    assert parse_store_url("postgresql://cs@db.example/cs").kind == "postgresql"
    assert parse_store_url("postgres://cs@db.example/cs").kind == "postgresql"
    assert isinstance(parse_store_url("sqlite:///"), str)
    assert isinstance(parse_store_url("postgresql://a b c=d"), str)


def test_token_file(tmp_path):
    token = tmp_path / "token"
    config = parse(GOOD.replace('listen = "0.0.0.0:9100"', f'listen = "0.0.0.0:9100"\ntoken_file = "{token}"'), "cs.toml")
    with pytest.raises(ConfigError, match="node.token_file: cannot read"):
        read_token(config)
    token.write_text("  \n")
    with pytest.raises(ConfigError, match="printable ASCII"):
        read_token(config)
    token.write_text("s3cret-token\n")
    assert read_token(config) == "s3cret-token"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "csserver", *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO)


def test_check_exits_0_for_a_valid_file_and_2_with_every_problem(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    ok = run_cli("check", "-c", str(good))
    assert ok.returncode == 0 and "ok" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('alias = "cs-a"', 'alias = "c s"'))
    refused = run_cli("check", "-c", str(bad))
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"{bad}:2: node.alias:")
    assert "Traceback" not in refused.stderr
    missing = run_cli("check", "-c", str(tmp_path / "none.toml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_run_refuses_a_bad_config_with_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[node]\n")
    refused = run_cli("run", "-c", str(bad))
    assert refused.returncode == 2 and "node.alias: required, missing" in refused.stderr


def test_help_reads_like_a_man_page():
    out = run_cli("--help").stdout
    for words in ("exit status:", "examples:", "csserver run -c", "HAID"):
        assert words in out
    ctx_help = run_cli("ctx", "--help").stdout
    assert "--cluster" in ctx_help and "Idempotency-Key" in ctx_help and "--deadline" in ctx_help
