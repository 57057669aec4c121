"""Rate decks from CSV: validation with line numbers, atomic replace, merge, mappings, the CLI,
and a large deck."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import psycopg
import pytest

from routing_engine.entrypoints.api import decks, rates_cli
from tests.api.conftest import Api, Carrier, use_test_environment


def upload(api: Api, path: str, text: str, expect: int = 200, **form: str) -> Any:
    return api.post(path, expect=expect, files={"file": ("deck.csv", text.encode(), "text/csv")}, data=form)


def deck_rows(db: psycopg.Connection, vendor_id: str) -> list[tuple[Any, ...]]:
    return db.execute("SELECT prefix, rate::text, interstate_rate::text, effective_at::date::text FROM routing.rates"
                      " WHERE provider_id = %s ORDER BY prefix, effective_at", (vendor_id,)).fetchall()


@pytest.fixture
def vendor(admin: Api) -> dict[str, Any]:
    return admin.post("/vendors", json={"name": "vendor-deck"})["data"]  # type: ignore[no-any-return]


def test_a_deck_is_loaded_with_jurisdictional_rates_and_npanxx_rows(admin: Api, vendor: dict[str, Any],
                                                                     api_db: psycopg.Connection) -> None:
    got = upload(admin, f"/vendors/{vendor['id']}/rates/import",
                 "npanxx,interstate,intrastate,indeterminate,effective_date\n212555,0.004,0.006,0.009,2026-01-01\n")
    assert got["data"] == {**got["data"], "rows": 1, "applied": 1, "replaced": 0, "mode": "replace"}
    assert api_db.execute("SELECT prefix, rate::text, indeterminate_rate::text FROM routing.rates").fetchall() == [
        ("1212555", "0.009000", "0.009000")]


def test_every_bad_line_is_named_and_nothing_changes(admin: Api, vendor: dict[str, Any],
                                                    api_db: psycopg.Connection) -> None:
    upload(admin, f"/vendors/{vendor['id']}/rates/import", "prefix,rate\n44,0.01\n")
    bad = ("prefix,rate,effective_date\n"
           "44,0.02,2026-01-01\n"        # line 2: fine
           "4x,0.02,\n"                  # line 3: prefix
           "49,-1,\n"                    # line 4: negative
           "33,0.1234567,\n"             # line 5: 7 decimals
           "34,0.01,01/02/2026\n"        # line 6: date
           "35,,\n")                     # line 7: no rate
    got = upload(admin, f"/vendors/{vendor['id']}/rates/import", bad, expect=422)
    assert got["error"]["code"] == "invalid_rows"
    problems = {(d["line"], d["field"]) for d in got["error"]["details"]}
    assert problems == {(3, "prefix"), (4, "rate"), (5, "rate"), (6, "effective_date"), (7, "rate")}
    assert "more than 6 decimal places" in str(got["error"]["details"])
    assert [r[0] for r in deck_rows(api_db, vendor["id"])] == ["44"]  # the old deck is intact


def test_duplicate_keys_in_a_file_are_reported_with_both_lines(admin: Api, vendor: dict[str, Any]) -> None:
    got = upload(admin, f"/vendors/{vendor['id']}/rates/import",
                 "prefix,rate,effective_date\n44,0.01,2026-01-01\n49,0.01,2026-01-01\n44,0.02,2026-01-01\n",
                 expect=422)
    assert got["error"]["details"][0]["line"] == 4 and "repeats line 2" in got["error"]["details"][0]["message"]


def test_replace_makes_the_deck_exactly_the_file_and_merge_adds_to_it(admin: Api, vendor: dict[str, Any],
                                                                      api_db: psycopg.Connection) -> None:
    path = f"/vendors/{vendor['id']}/rates/import"
    upload(admin, path, "prefix,rate,effective_date\n44,0.01,2026-01-01\n49,0.02,2026-01-01\n")
    got = upload(admin, path, "prefix,rate,effective_date\n33,0.03,2026-01-01\n")["data"]
    assert (got["applied"], got["replaced"]) == (1, 2)
    assert [r[0] for r in deck_rows(api_db, vendor["id"])] == ["33"]
    upload(admin, path, "prefix,rate,effective_date\n33,0.05,2026-01-01\n34,0.04,2027-01-01\n", mode="merge")
    assert deck_rows(api_db, vendor["id"]) == [("33", "0.050000", None, "2026-01-01"),
                                               ("34", "0.040000", None, "2027-01-01")]


def test_a_mapping_names_the_files_own_columns(admin: Api, vendor: dict[str, Any], api_db: psycopg.Connection) -> None:
    text = "Dial Code;x,Price,Inter\n1212,0.011,0.004\n"
    upload(admin, f"/vendors/{vendor['id']}/rates/import", text,
           mapping='{"prefix": "Dial Code;x", "rate": "Price", "interstate": "inter"}',
           effective_at="2025-05-01T00:00:00Z")
    assert deck_rows(api_db, vendor["id"]) == [("1212", "0.011000", "0.004000", "2025-05-01")]
    got = upload(admin, f"/vendors/{vendor['id']}/rates/import", text, expect=422, mapping='{"prefix": "Nope"}')
    assert got["error"]["details"][0]["line"] == 1
    got = upload(admin, f"/vendors/{vendor['id']}/rates/import", text, expect=422, mapping='{"colour": "x"}')
    assert got["error"]["details"][0]["field"] == "body.mapping"
    upload(admin, f"/vendors/{vendor['id']}/rates/import", text, expect=422, mapping="not json")


def test_files_that_are_not_csv_text_are_refused_not_crashed_on(admin: Api, vendor: dict[str, Any]) -> None:
    path = f"/vendors/{vendor['id']}/rates/import"
    assert upload(admin, path, "", expect=422)["error"]["details"][0]["message"] == "the file is empty"
    got = admin.post(path, expect=422, files={"file": ("x.csv", b"prefix,rate\n44,0.1\n49,\xff\xfe0.1\n", "text/csv")})
    assert got["error"]["details"][0] == {**got["error"]["details"][0], "line": 3, "field": "rate",
                                          "message": "bytes that are not UTF-8"}
    got = upload(admin, path, "prefix,rate,description\n44,0.1,a\x00b\n", expect=422)
    assert got["error"]["details"][0]["field"] == "description"
    admin.post(path, expect=422, data={"mode": "replace"})  # no file at all


def test_a_customer_price_list_is_imported_with_its_billing_increments(admin: Api, carrier: Carrier,
                                                                       api_db: psycopg.Connection) -> None:
    plan = admin.post("/rate-plans", json={"name": "wholesale-6"})["data"]
    upload(admin, f"/rate-plans/{plan['id']}/rates/import",
           "prefix,rate,initial_increment,subsequent_increment,connection_fee\n1,0.012,6,6,0.001\n44,0.05,,,\n")
    assert api_db.execute("SELECT prefix, initial_increment, subsequent_increment, connection_fee::text"
                          " FROM billing.rate_plan_rates WHERE rate_plan_id = %s ORDER BY prefix",
                          (plan["id"],)).fetchall() == [("1", 6, 6, "0.001000"), ("44", 60, 60, "0.000000")]


def test_a_vendor_deck_carries_its_billing_terms_and_rows_without_them_are_billed_per_second(
        admin: Api, vendor: dict[str, Any], api_db: psycopg.Connection) -> None:
    upload(admin, f"/vendors/{vendor['id']}/rates/import",
           "prefix,rate,First Increment,Next Increment,Minimum Duration,Setup Fee,effective_date\n"
           "1,0.010,60,60,30,0.0100,2026-01-01\n"
           "1,0.012,6,6,,,2027-01-01\n"          # a later row for the prefix: supersedes, no end date
           "44,0.05,,,,,2026-01-01\n")
    assert api_db.execute("SELECT prefix, effective_at::date::text, ends_at, initial_increment, subsequent_increment,"
                          " min_duration_s, connection_fee::text FROM routing.rates WHERE provider_id = %s"
                          " ORDER BY prefix, effective_at", (vendor["id"],)).fetchall() == [
        ("1", "2026-01-01", None, 60, 60, 30, "0.010000"), ("1", "2027-01-01", None, 6, 6, 0, "0.000000"),
        ("44", "2026-01-01", None, 1, 1, 0, "0.000000")]
    listed = admin.get(f"/vendors/{vendor['id']}/rates", params={"prefix": "1"})["data"]
    assert {(r["initial_increment"], r["subsequent_increment"], r["min_duration_s"], r["connection_fee"])
            for r in listed} == {(60, 60, 30, "0.010000"), (6, 6, 0, "0.000000")}
    bad = upload(admin, f"/vendors/{vendor['id']}/rates/import",
                 "prefix,rate,initial_increment,min_duration\n1,0.01,0,-5\n", expect=422)
    assert {(d["line"], d["field"]) for d in bad["error"]["details"]} == {(2, "initial_increment"),
                                                                          (2, "min_duration")}


def test_a_later_vendor_rate_posted_for_a_prefix_takes_over_with_its_billing_terms(admin: Api,
                                                                                  carrier: Carrier) -> None:
    vendor = carrier.vendor["id"]
    admin.post(f"/vendors/{vendor}/rates", json={"prefix": "1", "rate": "0.01", "effective_at": "2020-01-01T00:00:00Z"})
    later = admin.post(f"/vendors/{vendor}/rates", json={
        "prefix": "1", "rate": "0.02", "effective_at": "2021-01-01T00:00:00Z", "initial_increment": 60,
        "subsequent_increment": 60, "min_duration_s": 30, "connection_fee": "0.05"})["data"]
    assert (later["initial_increment"], later["min_duration_s"], later["connection_fee"]) == (60, 30, "0.050000")
    said = admin.get("/route/explain", params={"trunk": "BAN-A/trunk-1", "to": "12125551234"})["data"]
    assert {"vendor": "vendor-echo", "kept": True, "rate": "0.020000", "prefix": "1",
            "billing": "60/60/30/0.050000"} in said["trace"]["candidates"]
    admin.post(f"/vendors/{vendor}/rates", expect=409, json={"prefix": "1", "rate": "0.03",
                                                            "effective_at": "2021-01-01T00:00:00Z"})


def test_the_import_function_reports_rows_and_replacements(api_db: psycopg.Connection, vendor: dict[str, Any]) -> None:
    rows = [["code", "rate"], ["44", "0.01"], ["49", "0.02"]]
    report = decks.import_vendor_deck(api_db, vendor["id"], iter(rows), {"prefix": "code"})
    assert (report.ok, report.rows, report.applied, report.replaced) == (True, 2, 2, 0)
    report = decks.import_vendor_deck(api_db, vendor["id"], iter(rows[:2]), {"prefix": "code"})
    assert (report.applied, report.replaced) == (1, 2)
    bad = decks.import_vendor_deck(api_db, vendor["id"], iter([["prefix", "rate"], ["x", "1"]]), None)
    assert not bad.ok and str(bad.errors[0]) == "line 2: prefix: 'x' is not 1-15 digits"


def generated_deck(rows: int) -> str:
    out = io.StringIO()
    out.write("prefix,rate,interstate,intrastate,indeterminate,effective_date\n")
    for i in range(rows):
        out.write(f"1{2002000000 + i * 7:010d}"[:8] + f"{i % 10},0.00{i % 97 + 1:03d},0.004,0.006,0.009,2026-01-01\n")
    return out.getvalue()


def test_a_200k_row_deck_imports_whole(admin: Api, vendor: dict[str, Any], api_db: psycopg.Connection) -> None:
    # how long it takes is the benchmark's business (make bench), not a timed assertion here
    text = "prefix,rate,interstate,intrastate,indeterminate,effective_date\n" + "".join(
        f"1{2000000 + i},0.{i % 9000 + 1000:06d},0.004,0.006,0.009,2026-01-01\n" for i in range(200_000))
    got = upload(admin, f"/vendors/{vendor['id']}/rates/import", text)["data"]
    assert (got["rows"], got["applied"]) == (200_000, 200_000)
    assert api_db.execute("SELECT count(*) FROM routing.rates WHERE provider_id = %s", (vendor["id"],)).fetchone() \
        == (200_000,)


def test_the_cli_imports_with_a_progress_bar_and_names_bad_lines(admin: Api, vendor: dict[str, Any],
                                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    use_test_environment(monkeypatch)
    good = tmp_path / "deck.csv"
    with good.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Code", "Rate"])
        writer.writerows([[f"44{i:05d}", "0.01"] for i in range(25_000)])
    assert rates_cli.main(["import", "--vendor", "vendor-deck", str(good), "--map", "prefix=Code"]) == 0
    err = capsys.readouterr().err
    assert "100%" in err and "25,000 rates loaded into vendor vendor-deck" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("prefix,rate\n44,0.01\n49,abc\n")
    assert rates_cli.main(["import", "--vendor", "vendor-deck", str(bad)]) == 1
    assert "bad.csv: line 3: rate: not a decimal amount" in capsys.readouterr().err
    assert rates_cli.main(["import", "--vendor", "no-such-vendor", str(bad)]) == 2
