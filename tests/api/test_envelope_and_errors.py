"""Every answer is an envelope with the right status: 400, 401, 404, 405, 409, 413, 422 — never
a 500 for a bad request, and never the submitted secret in an error."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from routing_engine.entrypoints.api import keys
from routing_engine.entrypoints.api.principals import Role
from routing_engine.entrypoints.api.server import create_app
from routing_engine.settings import Settings
from tests.api.conftest import Api, Carrier


def test_a_success_carries_data_and_meta_with_the_request_id(client: TestClient, admin: Api) -> None:
    response = client.get("/api/v1/health", headers={"X-Request-ID": "trace-12345678"})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["data"] == {"status": "ok"}
    assert body["meta"]["request_id"] == "trace-12345678" == response.headers["X-Request-ID"]
    assert body["meta"]["timestamp"].endswith("Z") or "+00:00" in body["meta"]["timestamp"]
    generated = admin.get("/vendors")
    assert generated["meta"]["request_id"].startswith("req_") and generated["meta"]["page"]["limit"] == 100


def test_no_credentials_is_401_in_an_envelope(client: TestClient) -> None:
    response = client.get("/api/v1/accounts")
    assert response.status_code == 401
    assert response.json()["success"] is False and response.json()["error"]["code"] == "unauthenticated"
    assert client.get("/api/v1/accounts", headers={"Authorization": "Basic abc"}).status_code == 401


def test_malformed_json_is_400_and_invalid_fields_are_422_with_their_names(admin: Api) -> None:
    got = admin.call("POST", "/vendors", 400, content=b'{"name": ', headers={"Content-Type": "application/json"})
    assert got["error"]["code"] == "malformed_json"
    got = admin.post("/vendors", expect=422, json={"name": "ok", "number_format": "octal", "strip_digits": 99})
    assert {d["field"] for d in got["error"]["details"]} == {"body.number_format", "body.strip_digits"}
    admin.post("/vendors", expect=422, json={"name": "ok", "surprise": 1})  # unknown fields are refused
    admin.post("/vendors", expect=422, json=["not", "an", "object"])
    admin.post("/vendors", expect=422, content=b"name=x", headers={"Content-Type": "text/plain"})
    admin.get("/accounts/not-a-uuid", expect=422)


def test_errors_never_echo_a_submitted_password(admin: Api, carrier: Carrier) -> None:
    for secret in ("Qz7\x00", "Qz7-but-with\x00-a-nul"):
        got = admin.put(f"/trunks/{carrier.trunk_a['id']}/credentials/alice", expect=422, json={"password": secret})
        assert "Qz7" not in str(got) and got["error"]["details"][0]["field"] == "body.password"


def test_unknown_routes_and_methods_get_envelopes(admin: Api) -> None:
    assert admin.get("/nowhere", expect=404)["success"] is False
    assert admin.call("PUT", "/vendors", 405)["error"]["code"] == "method_not_allowed"


def test_duplicates_are_409_and_missing_rows_404(admin: Api, carrier: Carrier) -> None:
    got = admin.post("/vendors", expect=409, json={"name": "vendor-echo"})
    assert got["error"]["code"] == "conflict"
    admin.get("/vendors/00000000-0000-0000-0000-000000000000", expect=404)
    got = admin.post("/trunks", expect=409, json={"account_id": carrier.a["id"], "name": "trunk-1"})
    assert "unique" in got["error"]["message"]


@pytest.fixture
def small(api_settings: Settings, api_db: psycopg.Connection) -> Iterator[tuple[TestClient, str]]:
    """The app with a 1000-byte body limit, and an admin key."""
    settings = dataclasses.replace(api_settings, api=dataclasses.replace(api_settings.api, max_body_bytes=1000))
    _, key = keys.create(api_db, "small", Role.ADMIN)
    with TestClient(create_app(settings)) as client:
        yield client, key


def test_a_body_over_the_limit_is_413_declared_or_streamed(small: tuple[TestClient, str]) -> None:
    client, key = small
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    big = b'{"name": "' + b"x" * 2000 + b'"}'
    declared = client.post("/api/v1/vendors", content=big, headers=headers)
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:
        yield big[:600]
        yield big[600:]

    streamed = client.post("/api/v1/vendors", content=chunks(), headers=headers)
    assert streamed.status_code == 413, streamed.text
    upload = client.post("/api/v1/vendors/00000000-0000-0000-0000-000000000000/rates/import",
                         headers={"X-API-Key": key}, files={"file": ("d.csv", b"1," * 1000)})
    assert upload.status_code == 413
    # an unauthenticated client gets 401 before anything is read
    anonymous = client.post("/api/v1/vendors", content=b"{}", headers={"Content-Type": "application/json"})
    assert anonymous.status_code == 401
