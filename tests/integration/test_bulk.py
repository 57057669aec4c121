from pathlib import Path

import psycopg
import pytest

from routing_engine.ops import bulk


def test_lnp_file_is_loaded_and_a_second_load_updates(db: psycopg.Connection, tmp_path: Path) -> None:
    f = tmp_path / "lnp.csv"
    f.write_text("tn,lrn\n2125551234,3055559999\n+12125550001,12125550000\n")
    assert bulk.load(db, bulk.LNP, bulk.lnp_rows(f)) == 2
    f.write_text("12125551234,13055550000\n")
    bulk.load(db, bulk.LNP, bulk.lnp_rows(f))
    assert db.execute("SELECT tn, lrn FROM routing.lnp ORDER BY tn").fetchall() == [
        ("12125550001", "12125550000"), ("12125551234", "13055550000")]


def test_a_bad_line_is_named_and_nothing_is_loaded(db: psycopg.Connection, tmp_path: Path) -> None:
    f = tmp_path / "lnp.csv"
    f.write_text("2125551234,3055559999\n2125551235,notanumber\n")
    with pytest.raises(bulk.BulkError, match="line 2"):
        bulk.load(db, bulk.LNP, bulk.lnp_rows(f))
    assert db.execute("SELECT count(*) FROM routing.lnp").fetchone() == (0,)


def test_npanxx_file_with_optional_columns(db: psycopg.Connection, tmp_path: Path) -> None:
    f = tmp_path / "npanxx.csv"
    f.write_text("npanxx,country,state,lata,ocn,rate_center\n212555,US,NY,132,9102,NWYRCYZN01\n416555,CA,ON\n")
    assert bulk.load(db, bulk.NPANXX, bulk.npanxx_rows(f)) == 2
    assert db.execute("SELECT npanxx, country, state, lata, rate_center FROM routing.npanxx ORDER BY 1").fetchall() == [
        ("212555", "US", "NY", "132", "NWYRCYZN01"), ("416555", "CA", "ON", None, None)]


def test_generated_large_lnp_file_loads_in_one_go(db: psycopg.Connection, tmp_path: Path) -> None:
    f = tmp_path / "big.csv"
    with f.open("w") as fh:
        for i in range(100_000):
            fh.write(f"1212{5000000 + i:07d},13055550000\n")
    assert bulk.load(db, bulk.LNP, bulk.lnp_rows(f)) == 100_000
    assert db.execute("SELECT count(*) FROM routing.lnp").fetchone() == (100_000,)
