"""Demo data: a small carrier in the spirit of the seed's test data set, generated, not committed.

10 customers (5 active, 3 suspended, 2 testing) with 2-5 trunks and 10-50 DIDs each; four
vendors with rate decks (US by NPA-NXX with interstate/intrastate/indeterminate rates, five
international countries by prefix, toll-free); three routing plans; NPA-NXX homes of the demo
NPAs (two rate centres each) and a few ported numbers. Every simulated customer trunk and every
vendor gateway has its own loopback address. Every customer pays the "retail" price list (30%
above the dearest vendor); prepaid customers start with a 25.00 top-up.

    customer n (1-10), trunk t (1-5)  ->  127.0.0.(100 + 5*(n-1) + t)
    vendor v (1-4)                    ->  127.0.0.(200 + v), port 5060

Generation is deterministic (fixed seed, name-derived UUIDs) and loading is insert-if-missing,
so running it again changes nothing and keeps whatever ops edited since.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from decimal import Decimal

import psycopg

NAMESPACE = uuid.UUID("5b0c7a52-8f7e-4f3e-9a57-776172706465")  # fixed: ids stay stable

STATUSES = ["active"] * 5 + ["suspended"] * 3 + ["testing"] * 2
VENDORS = ["alpha", "bravo", "charlie", "delta"]
PLANS = {
    "standard": ["alpha", "bravo", "charlie", "delta"],
    "premium": ["alpha", "bravo"],
    "budget": ["charlie", "delta"],
}
# Five international destinations: country prefix and a mobile sub-prefix.
INTERNATIONAL = {
    "44": ("United Kingdom", "447"),
    "49": ("Germany", "4915"),
    "52": ("Mexico", "521"),
    "63": ("Philippines", "639"),
    "91": ("India", "919"),
}
TOLL_FREE = ["1800", "1833", "1844", "1855", "1866", "1877", "1888"]
NPA_STATES = {"201": "NJ", "212": "NY", "213": "CA", "305": "FL", "312": "IL", "404": "GA",
              "415": "CA", "512": "TX", "617": "MA", "702": "NV", "713": "TX", "818": "CA",
              "917": "NY", "972": "TX"}
NPAS = list(NPA_STATES)
# A few ported numbers (and where they went), so the demo shows LRN routing.
PORTED = {"12125550199": "13055550000", "14155550142": "15125550000", "16175550123": "12015550000"}


def uid(*parts: object) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, "/".join(str(p) for p in parts))


def customer_address(customer: int, trunk: int) -> str:
    return f"127.0.0.{100 + 5 * (customer - 1) + trunk}"


def vendor_address(vendor: int) -> str:
    return f"127.0.0.{200 + vendor}"


@dataclass(frozen=True)
class DemoSummary:
    accounts: int
    trunks: int
    dids: int
    vendors: int
    rates: int
    npanxx: int = 0
    ported: int = 0


def _markup(value: Decimal | None) -> Decimal | None:
    return None if value is None else (value * Decimal("1.3")).quantize(Decimal("0.000001"))


def _money(value: float) -> Decimal:
    return Decimal(str(round(value, 6))).quantize(Decimal("0.000001"))


def load(conn: psycopg.Connection, seed: int = 20251) -> DemoSummary:
    rnd = random.Random(seed)
    counts = {"accounts": 0, "trunks": 0, "dids": 0, "vendors": 0, "rates": 0}
    dearest: dict[str, list[Decimal | None]] = {}  # prefix -> highest vendor rate, inter, intra
    with conn.transaction(), conn.cursor() as cur:
        # vendors, gateways, rate decks
        for v, name in enumerate(VENDORS, start=1):
            vid = uid("vendor", name)
            cur.execute("INSERT INTO routing.providers (id, name) VALUES (%s, %s)"
                        " ON CONFLICT DO NOTHING", (vid, f"vendor-{name}"))
            cur.execute("INSERT INTO routing.provider_gateways (id, provider_id, name, host, port)"
                        " VALUES (%s, %s, %s, %s, 5060) ON CONFLICT DO NOTHING",
                        (uid("gateway", name, 1), vid, f"{name}-gw1", vendor_address(v)))
            base = 0.0040 + 0.0007 * rnd.random()
            rows: list[tuple[str, str, Decimal, Decimal | None, Decimal | None]] = []
            # US catch-all, then NPA-NXX rows with jurisdictional rates
            rows.append(("1", "United States", _money(base * 3), _money(base * 2.5), _money(base * 2.8)))
            for npa in NPAS:
                for _ in range(15):
                    nxx = f"{rnd.randint(2, 9)}{rnd.randint(0, 9)}{rnd.randint(0, 9)}"
                    inter = base * (0.8 + 0.6 * rnd.random())
                    intra = inter * (1.1 + 0.5 * rnd.random())
                    rows.append((f"1{npa}{nxx}", f"US {npa}-{nxx}", _money(max(inter, intra) * 1.1),
                                 _money(inter), _money(intra)))
            for prefix in TOLL_FREE:
                rows.append((prefix, "US toll-free", _money(0.0005 + 0.0005 * rnd.random()), None, None))
            for prefix, (country, mobile) in INTERNATIONAL.items():
                fixed = 0.01 + 0.05 * rnd.random()
                rows.append((prefix, country, _money(fixed), None, None))
                rows.append((mobile, f"{country} mobile", _money(fixed * (1.5 + rnd.random())), None, None))
            rows = list({r[0]: r for r in rows}.values())  # one row per prefix
            for prefix, desc, rate, inter_rate, intra_rate in rows:
                top = dearest.setdefault(prefix, [None, None, None])
                for i, value in enumerate((rate, inter_rate, intra_rate)):
                    current = top[i]
                    if value is not None and (current is None or value > current):
                        top[i] = value
                cur.execute(
                    "INSERT INTO routing.rates (id, provider_id, prefix, description, rate,"
                    " interstate_rate, intrastate_rate) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    (uid("rate", name, prefix), vid, prefix, desc, rate, inter_rate, intra_rate))
                counts["rates"] += 1
            counts["vendors"] += 1
        for plan, members in PLANS.items():
            pid = uid("plan", plan)
            cur.execute("INSERT INTO routing.routing_plans (id, name, strategy) VALUES (%s, %s,"
                        " 'least_cost') ON CONFLICT DO NOTHING", (pid, plan))
            for priority, member in enumerate(members):
                cur.execute("INSERT INTO routing.routing_plan_providers (id, routing_plan_id,"
                            " provider_id, priority) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                            (uid("plan-member", plan, member), pid, uid("vendor", member), priority))
        # the customers' price list: 30% above the dearest vendor, so every demo call has a margin
        retail = uid("rate-plan", "retail")
        cur.execute("INSERT INTO billing.rate_plans (id, name) VALUES (%s, 'retail') ON CONFLICT DO NOTHING",
                    (retail,))
        for prefix, (top_rate, top_inter, top_intra) in dearest.items():
            nanp = prefix.startswith("1") and prefix[:4] not in TOLL_FREE
            increments = (6, 6) if nanp else (60, 60)
            cur.execute(
                "INSERT INTO billing.rate_plan_rates (id, rate_plan_id, prefix, rate, interstate_rate,"
                " intrastate_rate, initial_increment, subsequent_increment) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (uid("retail-rate", prefix), retail, prefix, _markup(top_rate), _markup(top_inter),
                 _markup(top_intra), *increments))
        # customers, trunks, ACLs, DIDs
        plan_names = list(PLANS)
        for n, status in enumerate(STATUSES, start=1):
            aid = uid("account", n)
            reason = "Payment overdue" if status == "suspended" else None
            billing = "prepaid" if n % 2 == 0 else "postpaid"
            cur.execute("INSERT INTO accounts.accounts (id, ban, name, status, status_reason,"
                        " billing_type, credit_limit) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT DO NOTHING",
                        (aid, f"BAN{1000 + n}", f"Demo Customer {n:02d}", status, reason, billing,
                         Decimal("0") if billing == "prepaid" else Decimal(500 * n)))
            cur.execute("UPDATE accounts.accounts SET rate_plan_id = %s WHERE id = %s AND rate_plan_id IS NULL",
                        (retail, aid))
            if billing == "prepaid":  # an opening top-up in the ledger
                cur.execute("INSERT INTO billing.balance_updates (account_id, amount, kind, reference)"
                            " VALUES (%s, 25.00, 'topup', %s) ON CONFLICT DO NOTHING", (aid, f"demo-opening-{n}"))
            counts["accounts"] += 1
            trunk_count = 2 + rnd.randint(0, 3)
            trunk_ids = []
            for t in range(1, trunk_count + 1):
                tid = uid("trunk", n, t)
                trunk_ids.append(tid)
                # media: every trunk-1 anchored in rtpengine, trunk-2 when behind NAT, the rest end to end
                cur.execute("INSERT INTO trunks.trunks (id, account_id, name, routing_plan_id, media_anchor)"
                            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                            (tid, aid, f"trunk-{t}", uid("plan", plan_names[(n + t) % len(plan_names)]),
                             {1: "always", 2: "nat"}.get(t, "never")))
                cur.execute("INSERT INTO trunks.trunk_access_lists (id, account_id, trunk_id, cidr,"
                            " description) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                            (uid("acl", n, t), aid, tid, f"{customer_address(n, t)}/32",
                             "demo customer switch"))
                counts["trunks"] += 1
            for d in range(10 + rnd.randint(0, 40)):
                if d % 10 == 9:
                    e164 = f"+1{rnd.choice(TOLL_FREE)[1:]}{rnd.randint(2000000, 9999999)}"
                    kind = "tollfree"
                else:
                    e164 = f"+1{rnd.choice(NPAS)}{rnd.randint(2, 9)}{rnd.randint(0, 99):02d}" \
                           f"{rnd.randint(0, 9999):04d}"
                    kind = "local"
                nid = uid("did", e164)
                cur.execute("INSERT INTO numbers.number_inventory (id, e164, number_type, status)"
                            " VALUES (%s, %s, %s, 'assigned') ON CONFLICT DO NOTHING", (nid, e164, kind))
                if cur.rowcount:  # a number drawn twice stays with its first customer
                    cur.execute("INSERT INTO numbers.number_assignments (id, number_id, account_id,"
                                " trunk_id) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                                (uid("assignment", e164), nid, aid, trunk_ids[d % len(trunk_ids)]))
                counts["dids"] += 1
        # NPA-NXX homes (LERG-like): every NXX 200-999 of each demo NPA, two rate centres per NPA
        cur.execute("CREATE TEMP TABLE demo_npanxx (LIKE routing.npanxx INCLUDING DEFAULTS) ON COMMIT DROP")
        with cur.copy("COPY demo_npanxx (npanxx, country, state, lata, ocn, rate_center) FROM STDIN") as copy:
            for npa, state in NPA_STATES.items():
                for block in range(200, 1000):
                    copy.write_row((f"{npa}{block}", "US", state, f"L{npa}", f"OCN{block % 7}",
                                    f"{npa}-RC{1 if block < 600 else 2}"))
        cur.execute("INSERT INTO routing.npanxx SELECT * FROM demo_npanxx ON CONFLICT DO NOTHING")
        counts["npanxx"] = 800 * len(NPA_STATES)
        for tn, lrn in PORTED.items():
            cur.execute("INSERT INTO routing.lnp (tn, lrn) VALUES (%s, %s) ON CONFLICT DO NOTHING", (tn, lrn))
        counts["ported"] = len(PORTED)
    return DemoSummary(**counts)
