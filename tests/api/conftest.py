"""Admin API fixtures: the app in process (TestClient) on the real test database, API keys for
each role, and a small carrier made through the API itself."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from routing_engine.entrypoints.api import keys
from routing_engine.entrypoints.api.principals import Role
from routing_engine.entrypoints.api.server import create_app
from routing_engine.settings import Settings, load_settings
from tests.conftest import test_environ

JWT_SECRET = "test-secret-of-at-least-thirty-two-characters"
API_TABLES = ["auth.api_keys"]


def api_environ() -> dict[str, str]:
    """The shared test environment, keeping WARP_STACK__* so a run can use its own embedded
    servers (WARP_STACK__DATA_DIR / _POSTGRES_PORT / _REDIS_PORT) instead of the default ones."""
    env = test_environ()
    env.update({k: v for k, v in os.environ.items() if k.startswith("WARP_STACK__")})
    return env


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Overrides tests/conftest.py's: the same settings, on the servers WARP_STACK__* names."""
    return load_settings(environ=api_environ())


def use_test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """For CLI entry points, which read os.environ: exactly the tests' settings."""
    wanted = api_environ()
    for name in list(os.environ):
        if name.startswith("WARP_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)
    for name, value in wanted.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def api_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, api=dataclasses.replace(settings.api, jwt_secret=JWT_SECRET,
                                                                 max_body_bytes=20_000_000))


@pytest.fixture
def api_db(db: psycopg.Connection) -> psycopg.Connection:
    """The test database, emptied, API tables included."""
    db.execute(f"TRUNCATE {', '.join(API_TABLES)} CASCADE")
    return db


@pytest.fixture
def app(api_settings: Settings, api_db: psycopg.Connection) -> Iterator[FastAPI]:
    yield create_app(api_settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@dataclass
class Api:
    """A client with a key: ``api.get(path)`` etc. return the decoded JSON and check the status."""

    client: TestClient
    key: str | None

    def call(self, method: str, path: str, expect: int | None = None, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if self.key is not None:
            headers["X-API-Key"] = self.key
        response = self.client.request(method, f"/api/v1{path}", headers=headers, **kwargs)
        if expect is not None:
            assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def get(self, path: str, expect: int | None = 200, **kw: Any) -> Any:
        return self.call("GET", path, expect, **kw)

    def post(self, path: str, expect: int | None = 201, **kw: Any) -> Any:
        return self.call("POST", path, expect, **kw)

    def patch(self, path: str, expect: int | None = 200, **kw: Any) -> Any:
        return self.call("PATCH", path, expect, **kw)

    def put(self, path: str, expect: int | None = 200, **kw: Any) -> Any:
        return self.call("PUT", path, expect, **kw)

    def delete(self, path: str, expect: int | None = 200, **kw: Any) -> Any:
        return self.call("DELETE", path, expect, **kw)


@dataclass
class Keys:
    db: psycopg.Connection
    client: TestClient

    def make(self, role: Role, account_id: UUID | str | None = None, name: str = "test") -> str:
        _, key = keys.create(self.db, f"{name}-{role.value}", role,
                             UUID(str(account_id)) if account_id else None, "test")
        return key

    def api(self, role: Role, account_id: UUID | str | None = None) -> Api:
        return Api(self.client, self.make(role, account_id))


@pytest.fixture
def api_keys(api_db: psycopg.Connection, client: TestClient) -> Keys:
    return Keys(api_db, client)


@pytest.fixture
def admin(api_keys: Keys) -> Api:
    return api_keys.api(Role.ADMIN)


@pytest.fixture
def operator(api_keys: Keys) -> Api:
    return api_keys.api(Role.OPERATOR)


@pytest.fixture
def reader(api_keys: Keys) -> Api:
    return api_keys.api(Role.READ_ONLY)


@dataclass
class Carrier:
    """Two customers (A and B), each with a trunk and a DID, a vendor in a routing plan, and
    a retail rate plan — all made through the API."""

    plan: dict[str, Any]
    vendor: dict[str, Any]
    rate_plan: dict[str, Any]
    a: dict[str, Any]
    b: dict[str, Any]
    trunk_a: dict[str, Any]
    trunk_b: dict[str, Any]
    did_a: dict[str, Any]
    did_b: dict[str, Any]


def make_carrier(admin: Api) -> Carrier:
    plan = admin.post("/routing-plans", json={"name": "standard"})["data"]
    vendor = admin.post("/vendors", json={"name": "vendor-echo"})["data"]
    admin.post(f"/vendors/{vendor['id']}/gateways", json={"name": "echo-gw1", "host": "127.0.0.21"})
    admin.put(f"/routing-plans/{plan['id']}/vendors/{vendor['id']}", json={"priority": 5})
    rate_plan = admin.post("/rate-plans", json={"name": "retail"})["data"]
    for digit in "123456789":
        admin.post(f"/rate-plans/{rate_plan['id']}/rates", json={"prefix": digit, "rate": "1.00",
                                                                 "effective_at": "2020-01-01T00:00:00Z"})
    accounts = []
    for ban in ("BAN-A", "BAN-B"):
        accounts.append(admin.post("/accounts", json={
            "ban": ban, "name": f"Customer {ban[-1]}", "routing_plan_id": plan["id"],
            "rate_plan_id": rate_plan["id"]})["data"])
    a, b = accounts
    trunk_a = admin.post("/trunks", json={"account_id": a["id"], "name": "trunk-1"})["data"]
    trunk_b = admin.post("/trunks", json={"account_id": b["id"], "name": "trunk-1"})["data"]
    admin.post(f"/trunks/{trunk_a['id']}/acl", json={"cidr": "127.0.0.11/32"})
    admin.post(f"/trunks/{trunk_b['id']}/acl", json={"cidr": "127.0.0.12/32"})
    dids = []
    for e164, trunk in (("+12125550100", trunk_a), ("+12125550200", trunk_b)):
        did = admin.post("/numbers", json={"e164": e164})["data"]
        dids.append(admin.put(f"/numbers/{did['id']}/assignment", json={"trunk_id": trunk["id"]})["data"])
    return Carrier(plan, vendor, rate_plan, a, b, trunk_a, trunk_b, dids[0], dids[1])


@pytest.fixture
def carrier(admin: Api) -> Carrier:
    return make_carrier(admin)
