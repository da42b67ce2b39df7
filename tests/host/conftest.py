"""Fixtures of the host tests: a store on SQLite and on the suite's PostgreSQL."""

from __future__ import annotations

import pytest

from csserver.store.postgres import PostgresStore
from csserver.store.sqlite import SqliteStore
from labkit.pg import pg_schema
from tests.support import require_pg


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request, tmp_path):
    """make_store() -> a new, unopened store on this test's database; several share one database (nodes)."""
    if request.param == "sqlite":
        path = str(tmp_path / "contexts.db")
        yield lambda: SqliteStore(path)
        return
    url = require_pg()
    with pg_schema(url) as schema_url:
        yield lambda: PostgresStore(schema_url)
