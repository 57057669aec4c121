"""Every route checks the caller's role and scope, as this table says it should.

The test walks the OpenAPI document: an operation missing from ACCESS fails (a new route must
state its policy here), and every operation is called without credentials (401), with each
role below its own (403), customer-scoped where customers are not allowed (403), and with the
least role it allows (neither 401 nor 403).
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from routing_engine.entrypoints.api.principals import Role
from tests.api.conftest import Keys

R, OP, A = Role.READ_ONLY, Role.OPERATOR, Role.ADMIN
OWN = True  # customer-scoped callers allowed (their own rows only)

ACCESS: dict[tuple[str, str], tuple[Role, bool]] = {
    ("GET", "/accounts"): (R, OWN),
    ("POST", "/accounts"): (A, False),
    ("GET", "/accounts/{account_id}"): (R, OWN),
    ("PATCH", "/accounts/{account_id}"): (A, False),
    ("GET", "/accounts/{account_id}/balance"): (R, OWN),
    ("POST", "/accounts/{account_id}/topups"): (A, False),
    ("POST", "/accounts/{account_id}/adjustments"): (A, False),
    ("POST", "/accounts/{account_id}/rerating"): (A, False),
    ("GET", "/trunks"): (R, OWN),
    ("POST", "/trunks"): (OP, OWN),
    ("GET", "/trunks/{trunk_id}"): (R, OWN),
    ("PATCH", "/trunks/{trunk_id}"): (OP, OWN),
    ("DELETE", "/trunks/{trunk_id}"): (OP, OWN),
    ("GET", "/trunks/{trunk_id}/acl"): (R, OWN),
    ("POST", "/trunks/{trunk_id}/acl"): (OP, OWN),
    ("DELETE", "/trunks/{trunk_id}/acl/{entry_id}"): (OP, OWN),
    ("GET", "/trunks/{trunk_id}/credentials"): (R, OWN),
    ("PUT", "/trunks/{trunk_id}/credentials/{username}"): (OP, OWN),
    ("DELETE", "/trunks/{trunk_id}/credentials/{username}"): (OP, OWN),
    ("GET", "/numbers"): (R, OWN),
    ("POST", "/numbers"): (OP, False),
    ("GET", "/numbers/{number_id}"): (R, OWN),
    ("PATCH", "/numbers/{number_id}"): (OP, False),
    ("DELETE", "/numbers/{number_id}"): (OP, False),
    ("PUT", "/numbers/{number_id}/assignment"): (OP, OWN),
    ("DELETE", "/numbers/{number_id}/assignment"): (OP, False),
    ("GET", "/vendors"): (R, False),
    ("POST", "/vendors"): (OP, False),
    ("GET", "/vendors/{vendor_id}"): (R, False),
    ("PATCH", "/vendors/{vendor_id}"): (OP, False),
    ("DELETE", "/vendors/{vendor_id}"): (OP, False),
    ("GET", "/vendors/{vendor_id}/gateways"): (R, False),
    ("POST", "/vendors/{vendor_id}/gateways"): (OP, False),
    ("PATCH", "/vendors/{vendor_id}/gateways/{gateway_id}"): (OP, False),
    ("DELETE", "/vendors/{vendor_id}/gateways/{gateway_id}"): (OP, False),
    ("GET", "/vendors/{vendor_id}/rates"): (R, False),
    ("POST", "/vendors/{vendor_id}/rates"): (OP, False),
    ("DELETE", "/vendors/{vendor_id}/rates/{rate_id}"): (OP, False),
    ("POST", "/vendors/{vendor_id}/rates/import"): (OP, False),
    ("GET", "/routing-plans"): (R, False),
    ("POST", "/routing-plans"): (OP, False),
    ("GET", "/routing-plans/{plan_id}"): (R, False),
    ("PATCH", "/routing-plans/{plan_id}"): (OP, False),
    ("DELETE", "/routing-plans/{plan_id}"): (OP, False),
    ("GET", "/routing-plans/{plan_id}/vendors"): (R, False),
    ("PUT", "/routing-plans/{plan_id}/vendors/{vendor_id}"): (OP, False),
    ("DELETE", "/routing-plans/{plan_id}/vendors/{vendor_id}"): (OP, False),
    ("GET", "/rate-plans"): (R, OWN),
    ("POST", "/rate-plans"): (OP, False),
    ("GET", "/rate-plans/{plan_id}"): (R, OWN),
    ("PATCH", "/rate-plans/{plan_id}"): (OP, False),
    ("DELETE", "/rate-plans/{plan_id}"): (OP, False),
    ("GET", "/rate-plans/{plan_id}/rates"): (R, OWN),
    ("POST", "/rate-plans/{plan_id}/rates"): (OP, False),
    ("DELETE", "/rate-plans/{plan_id}/rates/{rate_id}"): (OP, False),
    ("POST", "/rate-plans/{plan_id}/rates/import"): (OP, False),
    ("GET", "/blocked-destinations"): (R, False),
    ("POST", "/blocked-destinations"): (OP, False),
    ("DELETE", "/blocked-destinations/{blocked_id}"): (OP, False),
    ("GET", "/ip-blocks"): (R, False),
    ("DELETE", "/ip-blocks/{ip}"): (OP, False),
    ("GET", "/route/explain"): (R, False),
    ("GET", "/drafts"): (R, False),
    ("POST", "/drafts"): (OP, False),
    ("GET", "/drafts/{name}"): (R, False),
    ("DELETE", "/drafts/{name}"): (OP, False),
    ("POST", "/drafts/{name}/edits"): (OP, False),
    ("DELETE", "/drafts/{name}/edits/{seq}"): (OP, False),
    ("POST", "/drafts/{name}/publish"): (OP, False),
    ("POST", "/replays"): (R, False),
    ("GET", "/cdrs"): (R, OWN),
}
PUBLIC = {("GET", "/health")}
PARAMS = {"ip": "192.0.2.1", "username": "someone"}


def operations(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    doc = client.get("/api/v1/openapi.json").json()
    return [(method.upper(), path.removeprefix("/api/v1"), op)
            for path, item in doc["paths"].items() for method, op in item.items()]


def request(client: TestClient, method: str, path: str, op: dict[str, Any], key: str | None) -> int:
    url = "/api/v1" + path.format(**{name: PARAMS.get(name, str(uuid.uuid4()))
                                     for name in _names(path)})
    kwargs: dict[str, Any] = {"headers": {"X-API-Key": key} if key else {}}
    if "/explain" in path:
        kwargs["params"] = {"to": "12125551234", "source": "192.0.2.1"}
    content = op.get("requestBody", {}).get("content", {})
    if "multipart/form-data" in content:
        kwargs["files"] = {"file": ("deck.csv", b"prefix,rate\n", "text/csv")}
    elif "application/json" in content:
        kwargs["json"] = {}
    return client.request(method, url, **kwargs).status_code


def _names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


@pytest.fixture
def keys_by_role(api_keys: Keys, api_db: psycopg.Connection) -> dict[str, str]:
    (account,) = api_db.execute(
        "INSERT INTO accounts.accounts (ban, name) VALUES ('BAN-X', 'x') RETURNING id").fetchone()
    found = {role.value: api_keys.make(role) for role in Role}
    for role in (R, OP):
        found[f"customer {role.value}"] = api_keys.make(role, account, name="customer")
    return found


def test_every_operation_states_its_access_policy(client: TestClient) -> None:
    seen = {(method, path) for method, path, _ in operations(client)}
    missing = seen - set(ACCESS) - PUBLIC
    assert not missing, f"routes without an entry in ACCESS (say who may call them): {sorted(missing)}"
    assert not set(ACCESS) - seen, f"ACCESS names routes that do not exist: {sorted(set(ACCESS) - seen)}"
    for method, path, op in operations(client):
        if (method, path) in PUBLIC:
            assert op["x-required-role"] == "none"
            continue
        role, customers = ACCESS[(method, path)]
        assert (op["x-required-role"], op["x-customer-scoped"]) == (role.value, customers), (method, path)


def test_every_operation_refuses_callers_its_policy_excludes(client: TestClient, keys_by_role: dict[str, str]) -> None:
    failures = []
    for method, path, op in operations(client):
        if (method, path) in PUBLIC:
            assert request(client, method, path, op, None) == 200
            continue
        role, customers = ACCESS[(method, path)]
        expected: dict[str, set[int] | None] = {"": {401}, "bogus": {401}}
        for other in Role:
            expected[other.value] = {403} if other.rank < role.rank else None
        for scoped in (R, OP):
            allowed = customers and scoped.rank >= role.rank
            expected[f"customer {scoped.value}"] = None if allowed else {403}
        for who, statuses in expected.items():
            key = keys_by_role.get(who, "warp_bogus" if who == "bogus" else None)
            status = request(client, method, path, op, key)
            refused = status in (401, 403)
            if (statuses is not None and status not in statuses) or (statuses is None and refused) or status >= 500:
                failures.append(f"{method} {path} as {who or 'nobody'}: {status}, expected "
                                f"{sorted(statuses) if statuses else 'neither 401 nor 403'}")
    assert not failures, "\n".join(failures)
