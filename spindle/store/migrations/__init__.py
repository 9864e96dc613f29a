"""Numbered SQL migrations (``NNNN_name.sql``), applied in order and recorded with a hash.

A migration that was applied and then edited is refused at start: schema changes go in a new
file, never into an old one, so every database converges on the same schema.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    pass


def load_migrations(package: str | None = None) -> list[Migration]:
    """The migrations of ``package`` (default: the SQLite ones, beside this module)."""
    found = []
    for entry in resources.files(package or __package__).iterdir():
        if entry.name.endswith(".sql"):
            version, _, rest = entry.name.partition("_")
            found.append(Migration(int(version), rest.removesuffix(".sql"), entry.read_text()))
    found.sort(key=lambda m: m.version)
    return found


def apply_migrations(conn: sqlite3.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Apply pending migrations; returns the versions applied now."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, sha256 TEXT NOT NULL, applied_at INTEGER NOT NULL)"
    )
    applied = {row[0]: row[1] for row in conn.execute("SELECT version, sha256 FROM schema_migrations")}
    done: list[int] = []
    for migration in migrations if migrations is not None else load_migrations():
        if migration.version in applied:
            if applied[migration.version] != migration.sha256:
                raise MigrationError(
                    f"migration {migration.version} ({migration.name}) changed after it was applied; "
                    "add a new migration instead of editing an old one"
                )
            continue
        # One transaction per migration; the connection is in autocommit mode
        # (isolation_level=None), so DDL is inside the explicit transaction too.
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, sha256, applied_at) VALUES (?, ?, ?, ?)",
                (migration.version, migration.name, migration.sha256, int(time.time())),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        done.append(migration.version)
    return done


def statements(sql: str) -> list[str]:
    """Split a script into statements (our migrations hold no semicolons inside literals)."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
