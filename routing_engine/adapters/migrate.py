"""Migrations: apply sql/migrations/NNNN_*.sql in order, each once, tracked in schema_migrations.

A landed migration is never edited: its checksum is recorded, and a file whose text changed
after it was applied stops the run with an error naming it. Concurrent runs are serialised
by an advisory lock, so two processes starting at once cannot apply a file twice.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from routing_engine.settings import PROJECT_ROOT

MIGRATIONS_DIR = PROJECT_ROOT / "sql" / "migrations"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x5741_5250  # "WARP"


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lower_snake.sql")
        found.append(Migration(path.stem, path))
    versions = [m.version[:4] for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a number in {directory}")
    return found


def latest(directory: Path = MIGRATIONS_DIR) -> str:
    """The newest migration this code knows: the schema it expects."""
    return discover(directory)[-1].version


def apply(conn: psycopg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; returns the versions applied now."""
    migrations = discover(directory)
    applied_now: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS public.schema_migrations ("
            " version text PRIMARY KEY, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done: dict[str, str] = dict(
            conn.execute("SELECT version, checksum FROM public.schema_migrations").fetchall())
        for m in migrations:
            if m.version in done:
                if done[m.version] != m.checksum:
                    raise MigrationError(
                        f"{m.path.name} changed after it was applied; landed migrations are never "
                        f"edited — add a new migration instead")
                continue
            try:
                with conn.transaction():
                    conn.execute(m.path.read_text().encode())
                    conn.execute("INSERT INTO public.schema_migrations (version, checksum)"
                                 " VALUES (%s, %s)", (m.version, m.checksum))
            except psycopg.Error as exc:
                raise MigrationError(f"{m.path.name} failed: {exc}") from exc
            applied_now.append(m.version)
        unknown = set(done) - {m.version for m in migrations}
        if unknown:
            raise MigrationError(f"database has migrations this checkout lacks: {sorted(unknown)}")
    return applied_now
