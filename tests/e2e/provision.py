"""Configure routing the way ops do: plain SQL into the routing tables."""

from __future__ import annotations

import uuid
from decimal import Decimal

import psycopg

from tests.conftest import CONFIG_TABLES


def reset(db: psycopg.Connection) -> None:
    db.execute(f"TRUNCATE {', '.join(CONFIG_TABLES)} CASCADE")


def vendor(db: psycopg.Connection, name: str, host: str, rates: dict[str, str],
           port: int = 5060) -> uuid.UUID:
    (vid,) = db.execute("INSERT INTO routing.providers (name) VALUES (%s) RETURNING id", (name,)).fetchone()
    db.execute("INSERT INTO routing.provider_gateways (provider_id, name, host, port)"
               " VALUES (%s, %s, %s, %s)", (vid, f"{name}-gw", host, port))
    for prefix, price in rates.items():
        db.execute("INSERT INTO routing.rates (provider_id, prefix, rate) VALUES (%s, %s, %s)",
                   (vid, prefix, Decimal(price)))
    return vid


def plan(db: psycopg.Connection, name: str, vendor_ids: list[uuid.UUID]) -> uuid.UUID:
    (pid,) = db.execute("INSERT INTO routing.routing_plans (name) VALUES (%s) RETURNING id",
                        (name,)).fetchone()
    for priority, vid in enumerate(vendor_ids):
        db.execute("INSERT INTO routing.routing_plan_providers (routing_plan_id, provider_id, priority)"
                   " VALUES (%s, %s, %s)", (pid, vid, priority))
    return pid


def retail_plan(db: psycopg.Connection) -> uuid.UUID:
    """A price list that pays 1.00/min for everything: tests about routing never hit margins."""
    row = db.execute("SELECT id FROM billing.rate_plans WHERE name = 'e2e-retail'").fetchone()
    if row:
        return row[0]  # type: ignore[no-any-return]
    (pid,) = db.execute("INSERT INTO billing.rate_plans (name) VALUES ('e2e-retail') RETURNING id").fetchone()
    for digit in "123456789":
        db.execute("INSERT INTO billing.rate_plan_rates (rate_plan_id, prefix, rate) VALUES (%s, %s, 1.00)",
                   (pid, digit))
    return pid  # type: ignore[no-any-return]


def customer(db: psycopg.Connection, ban: str, cidr: str, plan_id: uuid.UUID | None,
             status: str = "active", rate_plan: uuid.UUID | None = None,
             billing_type: str = "postpaid", credit_limit: str = "100000") -> tuple[uuid.UUID, uuid.UUID]:
    (aid,) = db.execute("INSERT INTO accounts.accounts (ban, name, status, rate_plan_id, billing_type, credit_limit)"
                        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                        (ban, f"Customer {ban}", status, rate_plan or retail_plan(db), billing_type,
                         credit_limit)).fetchone()
    (tid,) = db.execute("INSERT INTO trunks.trunks (account_id, name, routing_plan_id)"
                        " VALUES (%s, 'main', %s) RETURNING id", (aid, plan_id)).fetchone()
    db.execute("INSERT INTO trunks.trunk_access_lists (account_id, trunk_id, cidr) VALUES (%s, %s, %s)",
               (aid, tid, cidr))
    return aid, tid
