"""The capacity benchmark's data: one generated set of vendors, rate decks and calls, written
twice — into WARP's schema for configuration A, and into the tables of Kamailio's `permissions`
and `lcr` modules for configuration B — so both route the same calls over the same decks.

Every vendor gateway points at the one SIPp vendor process; which vendor wins does not change
the proxy's work, and one generator process costs the machine less than ten.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from routing_engine.adapters import migrate
from routing_engine.ops import stack
from routing_engine.settings import Settings

KAMAILIO_SCHEMA = Path("/usr/share/kamailio/postgres")
STATES = ["NY", "NJ", "CA", "TX", "FL", "IL", "GA", "MA", "NV", "WA"]


@dataclass(frozen=True)
class Rate:
    rate: Decimal
    interstate: Decimal | None = None
    intrastate: Decimal | None = None

    @property
    def ordering(self) -> Decimal:
        """What B orders by: the lcr module has no notion of jurisdiction, so a NANP row's
        interstate price stands for the row (A picks the jurisdiction per call)."""
        return self.interstate if self.interstate is not None else self.rate


@dataclass(frozen=True)
class BenchData:
    vendors: tuple[str, ...]
    decks: dict[str, dict[str, Rate]]  # vendor -> prefix -> rate
    homes: dict[str, str]  # NPA-NXX -> state
    calls: tuple[tuple[str, str], ...]  # (dialed, caller), E.164 digits without '+'

    @property
    def rate_rows(self) -> int:
        return sum(len(d) for d in self.decks.values())


def generate(vendors: int = 10, npanxx: int = 2000, international: int = 300, coverage: float = 0.7,
             calls: int = 5000, seed: int = 10) -> BenchData:
    rnd = random.Random(seed)
    homes: dict[str, str] = {}
    while len(homes) < npanxx:
        homes[f"{rnd.randint(2, 9)}{rnd.randint(0, 9)}{rnd.randint(0, 9)}{rnd.randint(2, 9)}"
              f"{rnd.randint(0, 9)}{rnd.randint(0, 9)}"] = rnd.choice(STATES)
    intl_numbers = _international_numbers(rnd)
    # country codes and up to 4 digits more, as decks have them
    candidates = sorted({number[:n] for number in intl_numbers
                         for n in range(_country_code_length(number), _country_code_length(number) + 5)})
    intl = set(rnd.sample(candidates, min(international, len(candidates))))
    names = tuple(f"bench-vendor-{v:02d}" for v in range(vendors))
    decks: dict[str, dict[str, Rate]] = {}
    for name in names:
        deck = {digit: Rate(Decimal("0.05")) for digit in "123456789"}  # every number routes everywhere
        for code in homes:
            if rnd.random() < coverage:
                base = Decimal(rnd.randint(100, 9000)) / Decimal(1_000_000)
                deck["1" + code] = Rate(base * 2, base, base * 3)
        for prefix in intl:
            if rnd.random() < coverage:
                deck[prefix] = Rate(Decimal(rnd.randint(1000, 40000)) / Decimal(1_000_000))
        decks[name] = deck
    codes = list(homes)
    made: list[tuple[str, str]] = []
    for _ in range(calls):
        caller = "1" + rnd.choice(codes) + "0100"
        if rnd.random() < 0.8:
            dialed = "1" + rnd.choice(codes) + f"{rnd.randint(0, 9999):04d}"
        else:
            dialed = rnd.choice(intl_numbers)
        made.append((dialed, caller))
    return BenchData(names, decks, homes, tuple(made))


REGIONS = ("GB", "DE", "FR", "ES", "IT", "MX", "BR", "IN", "PH", "NG", "PK", "CN", "JP", "AU", "ZA", "EG",
           "CO", "PE", "PL", "RO", "TR", "VN", "ID", "BD", "KE", "GH", "DO", "JM", "HT", "GT")


def _international_numbers(rnd: random.Random, per_region: int = 40) -> list[str]:
    """Valid international numbers (E.164 digits): each region's example mobile and fixed-line
    numbers with their last four digits varied, kept only where still valid."""
    import phonenumbers
    from phonenumbers import PhoneNumberType

    numbers: list[str] = []
    for region in REGIONS:
        for kind in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            base = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)[1:]
            for _ in range(per_region):
                candidate = base[:-4] + f"{rnd.randint(0, 9999):04d}"
                if phonenumbers.is_valid_number(phonenumbers.parse("+" + candidate)):
                    numbers.append(candidate)
    return numbers


def _country_code_length(number: str) -> int:
    import phonenumbers

    return len(str(phonenumbers.parse("+" + number).country_code))


def write_injection_file(data: BenchData, path: Path) -> None:
    """SIPp's -inf file: field0 dialed, field1 caller, read in order."""
    path.write_text("SEQUENTIAL\n" + "".join(f"{d};{c}\n" for d, c in data.calls))


def fresh_database(settings: Settings, name: str) -> str:
    """Drop and create ``name`` on the embedded cluster; return its URL."""
    stack.ensure_database(settings, "postgres")
    with psycopg.connect(settings.embedded_database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return settings.embedded_database_url(name)


def _id(conn: psycopg.Connection[Any], sql: str, params: tuple[object, ...] = ()) -> Any:
    row = conn.execute(sql.encode(), params).fetchone()
    assert row is not None
    return row[0]


def _copy(conn: psycopg.Connection[Any], statement: str, rows: list[tuple[object, ...]]) -> None:
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def load_warp(url: str, data: BenchData, customer_cidr: str, gateway: tuple[str, int]) -> None:
    """Configuration A's data in WARP's schema: vendors, decks, one least-cost plan with every
    vendor, a postpaid customer with a credit line no benchmark reaches and no CPS or call
    limit, NPA-NXX homes for the jurisdiction."""
    with psycopg.connect(url, autocommit=True) as conn:
        migrate.apply(conn)
    with psycopg.connect(url) as conn:
        plan = _id(conn, "INSERT INTO routing.routing_plans (name) VALUES ('bench') RETURNING id")
        rates: list[tuple[object, ...]] = []
        for priority, name in enumerate(data.vendors):
            vid = _id(conn, "INSERT INTO routing.providers (name) VALUES (%s) RETURNING id", (name,))
            conn.execute("INSERT INTO routing.provider_gateways (provider_id, name, host, port)"
                         " VALUES (%s, %s, %s, %s)", (vid, f"{name}-gw", *gateway))
            conn.execute("INSERT INTO routing.routing_plan_providers (routing_plan_id, provider_id, priority)"
                         " VALUES (%s, %s, %s)", (plan, vid, priority))
            rates += [(vid, prefix, r.rate, r.interstate, r.intrastate) for prefix, r in data.decks[name].items()]
        _copy(conn, "COPY routing.rates (provider_id, prefix, rate, interstate_rate, intrastate_rate) FROM STDIN",
              rates)
        _copy(conn, "COPY routing.npanxx (npanxx, state) FROM STDIN", list(data.homes.items()))
        retail = _id(conn, "INSERT INTO billing.rate_plans (name) VALUES ('bench-retail') RETURNING id")
        for digit in "123456789":
            conn.execute("INSERT INTO billing.rate_plan_rates (rate_plan_id, prefix, rate) VALUES (%s, %s, 1.00)",
                         (retail, digit))
        account = _id(conn, "INSERT INTO accounts.accounts (ban, name, status, rate_plan_id, billing_type,"
                      " credit_limit) VALUES ('BENCH1', 'Benchmark customer', 'active', %s, 'postpaid', 999999999)"
                      " RETURNING id", (retail,))
        # no CPS limit worth the name: the benchmark looks for the node's own ceiling
        trunk = _id(conn, "INSERT INTO trunks.trunks (account_id, name, routing_plan_id, cps_limit)"
                    " VALUES (%s, 'bench', %s, 100000) RETURNING id", (account, plan))
        conn.execute("INSERT INTO trunks.trunk_access_lists (account_id, trunk_id, cidr) VALUES (%s, %s, %s)",
                     (account, trunk, customer_cidr))


def lcr_rules(data: BenchData) -> dict[str, list[str]]:
    """For every prefix of any deck, the vendors in least-cost order for numbers whose longest
    match among all decks is that prefix: each vendor priced at its own longest match. With
    `stopper` set on every rule this is exactly A's per-vendor longest-prefix least cost."""
    union = sorted({p for deck in data.decks.values() for p in deck})
    rules: dict[str, list[str]] = {}
    for prefix in union:
        priced: list[tuple[Decimal, int, str]] = []
        for index, name in enumerate(data.vendors):
            deck = data.decks[name]
            match = next((prefix[:n] for n in range(len(prefix), 0, -1) if prefix[:n] in deck), None)
            if match is not None:
                priced.append((deck[match].ordering, index, name))
        rules[prefix] = [name for _, _, name in sorted(priced)]
    return rules


def load_native(url: str, data: BenchData, customer_ip: str, gateway: tuple[str, int]) -> int:
    """Configuration B's data in Kamailio's own tables (schema from the Debian package).
    Returns the number of LCR rules."""
    with psycopg.connect(url) as conn:
        for script in ("standard-create.sql", "permissions-create.sql", "lcr-create.sql"):
            conn.execute((KAMAILIO_SCHEMA / script).read_text().encode())
        conn.execute("INSERT INTO address (grp, ip_addr, mask, port) VALUES (1, %s, 32, 0)", (customer_ip,))
        gw_ids: dict[str, int] = {}
        for index, name in enumerate(data.vendors, start=1):
            conn.execute("INSERT INTO lcr_gw (id, lcr_id, gw_name, ip_addr, port, uri_scheme, transport, strip, flags)"
                         " VALUES (%s, 1, %s, %s, %s, 1, 1, 0, 0)", (index, name, *gateway))
            gw_ids[name] = index
        rules = lcr_rules(data)
        rule_rows: list[tuple[object, ...]] = []
        target_rows: list[tuple[object, ...]] = []
        for rule_id, (prefix, ordered) in enumerate(rules.items(), start=1):
            rule_rows.append((rule_id, 1, prefix, 1, 1))
            target_rows += [(1, rule_id, gw_ids[name], priority, 1) for priority, name in enumerate(ordered)]
        _copy(conn, "COPY lcr_rule (id, lcr_id, prefix, stopper, enabled) FROM STDIN", rule_rows)
        _copy(conn, "COPY lcr_rule_target (lcr_id, rule_id, gw_id, priority, weight) FROM STDIN", target_rows)
    return len(rules)


def prime_lrn_cache(redis_client: Any, data: BenchData, ttl_s: int = 3600) -> int:
    """Answer every NANP number of the run from the LRN cache ("not ported"), as a warm node does."""
    from routing_engine.adapters.lrn_sources import KEY
    from routing_engine.domain.lrn import NOT_PORTED

    pipe = redis_client.pipeline(transaction=False)
    numbers = {d for d, _ in data.calls if d.startswith("1")}
    for number in numbers:
        pipe.set(KEY.format(number), NOT_PORTED, ex=ttl_s)
    pipe.execute()
    return len(numbers)
