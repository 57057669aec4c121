"""Authentication: bearer JWTs (HS256 secret or a JWKS), API keys (stored hashed), and the
key CLI."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from routing_engine.entrypoints.api import keys, keys_cli
from routing_engine.entrypoints.api.principals import Role, key_digest
from routing_engine.entrypoints.api.server import create_app
from routing_engine.settings import Settings
from tests.api.conftest import JWT_SECRET, Api, Carrier, use_test_environment


def token(role: str | None = "operator", secret: str = JWT_SECRET, **claims: Any) -> str:
    body = {"sub": "alice", "iss": "warp", "aud": "warp-admin", "exp": int(time.time()) + 300, **claims}
    if role is not None:
        body["role"] = role
    return jwt.encode(body, secret, algorithm="HS256")


def bearer(client: TestClient, value: str, path: str = "/api/v1/vendors") -> Any:
    return client.get(path, headers={"Authorization": f"Bearer {value}"})


def test_a_signed_token_with_a_role_is_accepted(client: TestClient) -> None:
    response = bearer(client, token("read-only"))
    assert response.status_code == 200 and response.json()["success"] is True


@pytest.mark.parametrize("bad", [
    token(secret="another-secret-of-at-least-thirty-two-chars"),
    token(iss="someone-else"),
    token(aud="another-api"),
    token(exp=int(time.time()) - 3600),
    jwt.encode({"sub": "alice", "iss": "warp", "aud": "warp-admin", "role": "admin"}, JWT_SECRET, algorithm="HS256"),
    "not.a.token",
    jwt.encode({"sub": "a", "iss": "warp", "aud": "warp-admin", "exp": 9999999999, "role": "admin"}, "",
               algorithm="none"),
], ids=["wrong-secret", "wrong-issuer", "wrong-audience", "expired", "no-exp", "garbage", "alg-none"])
def test_tokens_that_fail_any_check_are_refused(client: TestClient, bad: str) -> None:
    response = bearer(client, bad)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthenticated"
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_token_without_a_known_role_is_forbidden(client: TestClient) -> None:
    assert bearer(client, token(None)).status_code == 403
    assert bearer(client, token("superuser")).status_code == 403


def test_a_token_with_an_account_claim_is_customer_scoped(client: TestClient, carrier: Carrier) -> None:
    scoped = token("operator", account_id=carrier.a["id"])
    assert bearer(client, scoped).status_code == 403  # vendors are carrier-only
    accounts = bearer(client, scoped, "/api/v1/accounts").json()["data"]
    assert [a["id"] for a in accounts] == [carrier.a["id"]]
    assert bearer(client, token("admin", account_id=carrier.a["id"])).status_code == 403


def test_role_claims_are_enforced_per_route(client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {token('read-only')}"}
    assert client.post("/api/v1/vendors", json={"name": "v"}, headers=headers).status_code == 403
    headers = {"Authorization": f"Bearer {token('operator')}"}
    assert client.post("/api/v1/vendors", json={"name": "v"}, headers=headers).status_code == 201
    assert client.post("/api/v1/accounts", json={"ban": "B1", "name": "n"}, headers=headers).status_code == 403


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, Any]]:
    """A JWKS endpoint on loopback, with one RSA key."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    body = json.dumps({"keys": [{**public_jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", private
    server.shutdown()


def test_tokens_signed_by_a_key_of_the_jwks_are_accepted(api_settings: Settings, api_db: psycopg.Connection,
                                                        jwks_server: tuple[str, Any]) -> None:
    url, private = jwks_server
    settings = dataclasses.replace(api_settings, api=dataclasses.replace(api_settings.api, jwt_secret="", jwks_url=url))
    claims = {"sub": "bob", "iss": "warp", "aud": "warp-admin", "exp": int(time.time()) + 60, "role": "read-only"}
    with TestClient(create_app(settings)) as client:
        good = jwt.encode(claims, private, algorithm="RS256", headers={"kid": "k1"})
        assert bearer(client, good).status_code == 200
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(claims, other, algorithm="RS256", headers={"kid": "k1"})
        assert bearer(client, forged).status_code == 401
        # with no HS256 secret configured, a symmetric token is not accepted
        assert bearer(client, token("admin")).status_code == 401


def test_api_keys_are_stored_only_as_their_sha256(api_db: psycopg.Connection, client: TestClient) -> None:
    key_id, key = keys.create(api_db, "portal", Role.READ_ONLY)
    (stored,) = api_db.execute("SELECT row_to_json(k)::text FROM auth.api_keys k WHERE id = %s", (key_id,)).fetchone()
    assert key not in stored and key[12:] not in stored and key_digest(key) in stored
    assert client.get("/api/v1/vendors", headers={"X-API-Key": key}).status_code == 200
    assert client.get("/api/v1/vendors", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_revoked_and_expired_keys_stop_working_at_once(api_db: psycopg.Connection, client: TestClient) -> None:
    key_id, key = keys.create(api_db, "temp", Role.ADMIN)
    assert client.get("/api/v1/vendors", headers={"X-API-Key": key}).status_code == 200
    keys.revoke(api_db, str(key_id))
    assert client.get("/api/v1/vendors", headers={"X-API-Key": key}).status_code == 401
    _, old = keys.create(api_db, "old", Role.ADMIN)
    api_db.execute("UPDATE auth.api_keys SET expires_at = now() - interval '1 s' WHERE name = 'old'")
    assert client.get("/api/v1/vendors", headers={"X-API-Key": old}).status_code == 401


def test_a_customer_scoped_key_cannot_be_admin(api_db: psycopg.Connection, carrier: Carrier) -> None:
    with pytest.raises(keys.KeyProblem):
        keys.create(api_db, "cust", Role.ADMIN, carrier.a["id"])


def test_the_key_cli_prints_a_working_key_once(api_db: psycopg.Connection, client: TestClient, carrier: Carrier,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    use_test_environment(monkeypatch)
    assert keys_cli.main(["create", "--name", "portal", "--role", "read-only", "--account", "BAN-A"]) == 0
    out = capsys.readouterr()
    key = out.out.strip()
    assert key.startswith("warp_") and "shown once" in out.err and key not in out.err
    assert [a["ban"] for a in Api(client, key).get("/accounts")["data"]] == ["BAN-A"]
    assert keys_cli.main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "portal" in listing and key not in listing
    assert keys_cli.main(["revoke", "portal"]) == 0
    assert client.get("/api/v1/accounts", headers={"X-API-Key": key}).status_code == 401
    assert keys_cli.main(["create", "--name", "x", "--role", "admin", "--account", "BAN-A"]) == 1
