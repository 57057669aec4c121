"""Tables: every table the API touches, the columns it returns, and how customers are scoped.

Secret columns (trunk_auth.ha1, ha1_sha256; api_keys.key_sha256) are in no column list, so no
route can return them by accident.
"""

from __future__ import annotations

from uuid import UUID

import psycopg

from routing_engine.entrypoints.api.envelope import invalid
from routing_engine.entrypoints.api.store import TENANT, Table, fetch

_STAMPS = ("created_at", "updated_at")

ACCOUNTS = Table("accounts", "accounts", (
    "id", "ban", "name", "status", "status_reason", "billing_type", "credit_limit", "currency",
    "routing_plan_id", "rate_plan_id", "cps_limit", "max_concurrent", *_STAMPS),
    soft_delete=True, scope_sql="id = %s")
BALANCE_UPDATES = Table("billing", "balance_updates", (
    "id", "account_id", "amount", "kind", "reference", "created_at"), scope_sql=TENANT)

TRUNKS = Table("trunks", "trunks", (
    "id", "account_id", "name", "direction", "routing_plan_id", "rate_plan_id", "tech_prefix", "enabled",
    "strip_digits", "add_prefix", "auth_mode", "inbound_uri", "max_contacts", "cps_limit", "max_concurrent",
    "media_anchor", "media_codecs", "media_failure", "topology_hiding", *_STAMPS), soft_delete=True, scope_sql=TENANT)
ACL = Table("trunks", "trunk_access_lists", (
    "id", "account_id", "trunk_id", "cidr", "port", "transport", "description", *_STAMPS), scope_sql=TENANT)
CREDENTIALS = Table("trunks", "trunk_auth", (
    "id", "account_id", "trunk_id", "username", "realm", *_STAMPS), soft_delete=True, scope_sql=TENANT)

NUMBERS = Table("numbers", "number_inventory", (
    "id", "e164", "number_type", "region", "status", *_STAMPS), soft_delete=True,
    scope_sql="id IN (SELECT number_id FROM numbers.number_assignments WHERE released_at IS NULL"
              " AND account_id = %s)")
ASSIGNMENTS = Table("numbers", "number_assignments", (
    "id", "number_id", "account_id", "trunk_id", "assigned_at", "released_at"), scope_sql=TENANT)

VENDORS = Table("routing", "providers", (
    "id", "name", "enabled", "number_format", "strip_digits", "add_prefix", "tech_prefix",
    "translate_caller", "send_lrn", *_STAMPS), soft_delete=True)
GATEWAYS = Table("routing", "provider_gateways", (
    "id", "provider_id", "name", "host", "port", "transport", "priority", "enabled", "probe", *_STAMPS),
    soft_delete=True)
VENDOR_RATES = Table("routing", "rates", (
    "id", "provider_id", "prefix", "description", "rate", "interstate_rate", "intrastate_rate",
    "indeterminate_rate", "initial_increment", "subsequent_increment", "min_duration_s", "connection_fee",
    "effective_at", "ends_at", *_STAMPS))
PLANS = Table("routing", "routing_plans", (
    "id", "name", "strategy", "description", "failover_codes", "max_attempts", "attempt_timeout_ms",
    "min_margin", "allow_negative_margin", *_STAMPS), soft_delete=True)
PLAN_VENDORS = Table("routing", "routing_plan_providers", (
    "id", "routing_plan_id", "provider_id", "priority", "weight", "enabled", *_STAMPS))
BLOCKED = Table("routing", "blocked_destinations", (
    "id", "provider_id", "routing_plan_id", "prefix", "reason", *_STAMPS))

# A customer sees its own price lists and the shared ones its account or trunks are on.
RATE_PLANS = Table("billing", "rate_plans", ("id", "account_id", "name", "currency", *_STAMPS),
                   soft_delete=True, scope_sql=(
    "(account_id = %s OR id IN (SELECT rate_plan_id FROM accounts.accounts WHERE id = %s)"
    " OR id IN (SELECT rate_plan_id FROM trunks.trunks WHERE account_id = %s AND deleted_at IS NULL))"))
PLAN_RATES = Table("billing", "rate_plan_rates", (
    "id", "rate_plan_id", "prefix", "description", "rate", "interstate_rate", "intrastate_rate",
    "indeterminate_rate", "initial_increment", "subsequent_increment", "min_duration_s", "connection_fee",
    "effective_at", "ends_at", *_STAMPS))


_NOUNS = {"accounts": "account", "routing_plans": "routing plan", "rate_plans": "rate plan", "providers": "vendor",
          "trunks": "trunk"}


def must_exist(conn: psycopg.Connection, table: Table, id: UUID | None, field: str,
               scope: UUID | None = None) -> None:
    """A reference in a request body names a live row (one the caller may see), else 422."""
    if id is not None and fetch(conn, table, id, scope) is None:
        raise invalid(field, f"no such {_NOUNS.get(table.name, table.name)} {id}")
