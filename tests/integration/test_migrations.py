import shutil
from pathlib import Path

import psycopg
import pytest

from routing_engine.adapters import migrate
from routing_engine.settings import Settings
from tests.conftest import admin_url


@pytest.fixture
def scratch(settings: Settings, database: str):
    """An empty database of its own, for tests that apply migrations from scratch."""
    admin = admin_url(settings)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "warp_scratch" WITH (FORCE)')
        conn.execute('CREATE DATABASE "warp_scratch"')
    url = database.rsplit("/", 1)[0] + "/warp_scratch"
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "warp_scratch" WITH (FORCE)')


def test_migrations_apply_once_and_a_second_run_changes_nothing(scratch: psycopg.Connection) -> None:
    first = migrate.apply(scratch)
    assert first == [m.version for m in migrate.discover()]
    assert migrate.apply(scratch) == []
    tables = scratch.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema IN"
                             " ('accounts','trunks','numbers','routing','billing','audit','cdr')").fetchone()
    assert tables and tables[0] >= 18


def test_a_landed_migration_edited_afterwards_stops_the_run(scratch: psycopg.Connection,
                                                            tmp_path: Path) -> None:
    for m in migrate.discover():
        shutil.copy(m.path, tmp_path / m.path.name)
    migrate.apply(scratch, tmp_path)
    first = sorted(tmp_path.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(migrate.MigrationError, match="changed after it was applied"):
        migrate.apply(scratch, tmp_path)


def test_a_failing_migration_is_named_and_leaves_nothing_half_applied(
        scratch: psycopg.Connection, tmp_path: Path) -> None:
    (tmp_path / "0001_good.sql").write_text("CREATE TABLE t1 (id int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE t2 (id int); SELECT no_such_function();")
    with pytest.raises(migrate.MigrationError, match="0002_bad.sql"):
        migrate.apply(scratch, tmp_path)
    assert scratch.execute("SELECT to_regclass('t1'), to_regclass('t2')").fetchone() == (None, None)


def test_badly_named_migration_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "add-things.sql").write_text("SELECT 1;")
    with pytest.raises(migrate.MigrationError, match="NNNN_lower_snake"):
        migrate.discover(tmp_path)
