"""The capacity benchmark's native Kamailio configurations still parse with the defines the
benchmark passes, its LCR rules for the lcr module order vendors as WARP's least cost does, and
configuration B's terms are the same as A's."""

from __future__ import annotations

import os
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from benchmarks import capacity_data
from benchmarks.capacity_data import BenchData, Rate
from routing_engine.settings import PROJECT_ROOT

NATIVE = PROJECT_ROOT / "benchmarks" / "native"
DEFINES = {
    "lcr.cfg": ["BENCH_CHILDREN=4", "BENCH_TCP_CHILDREN=2", "BENCH_LOG_LEVEL=2", "BENCH_RULE_HASH=4096"],
    "full.cfg": ["BENCH_CHILDREN=4", "BENCH_TCP_CHILDREN=2", "BENCH_LOG_LEVEL=2", "BENCH_RULE_HASH=4096",
                 "BENCH_MAX_DURATION=14400", "BENCH_TOPOS_EXPIRE=14700",
                 'BENCH_TOPOS_REDIS="name=topos;addr=127.0.0.1;port=26379;db=0"',
                 'BENCH_CNXCC_REDIS="addr=127.0.0.1;port=26379;db=1"'],
    "null.cfg": ["BENCH_CHILDREN=4", "BENCH_TCP_CHILDREN=2", "BENCH_LOG_LEVEL=2",
                 'BENCH_GATEWAY="127.0.0.131:5060"'],
}


@pytest.mark.parametrize("cfg", sorted(DEFINES))
def test_native_config_parses_with_the_benchmark_defines(cfg: str, tmp_path: Path) -> None:
    cmd = ["/usr/sbin/kamailio", "-c", "-f", str(NATIVE / cfg), "-l", "udp:127.0.0.120:5060"]
    for define in DEFINES[cfg]:
        cmd += ["-A", define]
    # BENCH_DB_URL comes from the environment, as the benchmark gives it (it carries a password)
    env = {**os.environ, "BENCH_DB_URL": "postgres://warp:pw@127.0.0.1:55432/warp_bench_native"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stderr, result.stderr


def test_lcr_rules_price_each_vendor_at_its_own_longest_match() -> None:
    data = BenchData(
        vendors=("cheap-long", "cheap-short"),
        decks={"cheap-long": {"1": Rate(Decimal("0.05")), "1212555": Rate(Decimal("0.009"), Decimal("0.004"))},
               "cheap-short": {"1": Rate(Decimal("0.05")), "1212": Rate(Decimal("0.006"))}},
        homes={}, calls=())
    rules = capacity_data.lcr_rules(data)
    assert rules["1212555"] == ["cheap-long", "cheap-short"]  # 0.004 interstate against 0.006 from "1212"
    assert rules["1212"] == ["cheap-short", "cheap-long"]  # cheap-long only has its catch-all 0.05 there
    assert rules["1"] == ["cheap-long", "cheap-short"]  # a tie: vendor order decides, as in the plan


def test_generated_calls_are_routable_numbers() -> None:
    import phonenumbers

    data = capacity_data.generate(calls=300)
    for dialed, caller in data.calls:
        assert phonenumbers.is_possible_number(phonenumbers.parse("+" + dialed)), dialed
        assert caller.startswith("1") and len(caller) == 11


def test_native_terms_are_the_terms_a_runs_under() -> None:
    terms = capacity_data.TERMS
    rows = {key: (kind, value) for key, kind, value in capacity_data.native_terms(terms)}
    assert rows[f"{terms.trunk}::account"] == (0, terms.account)
    assert rows[f"{terms.trunk}::max_calls"] == rows[f"{terms.account}::max_calls"] == (1, str(terms.max_calls))
    assert Decimal(rows[f"{terms.account}::credit"][1]) == terms.credit
    # cnxcc's cost per second is the per-minute price; its pulses are the billing increments
    assert abs(Decimal(rows[f"{terms.account}::cost_per_s"][1]) * 60 - terms.price_per_min) < Decimal("0.0001")
    assert rows[f"{terms.account}::initial_pulse"] == (1, str(terms.initial_increment))
    assert rows[f"{terms.account}::final_pulse"] == (1, str(terms.subsequent_increment))
