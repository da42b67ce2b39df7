"""Helpers for tests of csserver and of programs built on it: the test PostgreSQL, a schema per test.

`scripts/test-postgres.sh start` runs a real PostgreSQL server and writes `scripts/test-postgres.env`;
`make test` exports its CSSERVER_TEST_PG_URL, and a plain `pytest` run finds the file by itself.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV_VAR = "CSSERVER_TEST_PG_URL"
ENV_FILE = Path(__file__).resolve().parent.parent / "scripts" / "test-postgres.env"


def pg_url() -> str | None:
    """The test server's URL: from the environment, else from scripts/test-postgres.env; None if neither."""
    url = os.environ.get(ENV_VAR)
    if url:
        return url
    try:
        lines = ENV_FILE.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and name.strip() == ENV_VAR and value.strip():
            return value.strip()
    return None


def pg_problem(url: str | None) -> str | None:
    """Why the test PostgreSQL cannot be used (None when it answers)."""
    if not url:
        return f"{ENV_VAR} is not set (run scripts/test-postgres.sh start)"
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"the test PostgreSQL at {ENV_VAR} does not answer: {str(exc).strip()}"
    return None


@contextmanager
def pg_schema(url: str) -> Iterator[str]:
    """A conninfo like `url` whose search_path is a new, empty schema, dropped afterwards: one per test,
    so tests (and test runs of several people on one server) never see each other's tables."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield make_conninfo(url, options=f"-c search_path={schema}")
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
