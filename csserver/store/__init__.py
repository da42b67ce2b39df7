"""Where contexts live: the `Store` interface (`base`), its SQL transactions (`sql`), SQLite and PostgreSQL."""

from __future__ import annotations

from csserver.config import StoreConfig
from csserver.store.base import Store


def make_store(config: StoreConfig) -> Store:
    """The (not yet opened) store a `[store] url` names."""
    if config.kind == "sqlite":
        from csserver.store.sqlite import SqliteStore

        return SqliteStore(config.sqlite_path)
    from csserver.store.postgres import PostgresStore

    return PostgresStore(config.url)
