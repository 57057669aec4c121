"""Principals: who is calling (from a bearer JWT or an API key) and what each route allows.

Roles, each including the one below it: ``read-only`` (GET), ``operator`` (routing
configuration, trunks, numbers, rate decks), ``admin`` (accounts and money as well). A principal
with an ``account_id`` is customer-scoped: only routes marked for customers let it in, and those
routes filter every query by that account.

Authentication happens in the gate middleware, before any body is read; authorisation is the
``allow()`` dependency each route declares. The route table test walks the OpenAPI document and
checks that every operation answers 401/403 as its declared policy says.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from uuid import UUID

import jwt
from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer

from routing_engine.entrypoints.api.envelope import ApiError
from routing_engine.entrypoints.api.store import Pool
from routing_engine.settings import ApiSettings

log = logging.getLogger("warp.api.auth")

API_KEY_PREFIX = "warp_"
_ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


class Role(StrEnum):
    READ_ONLY = "read-only"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return [Role.READ_ONLY, Role.OPERATOR, Role.ADMIN].index(self)


@dataclass(frozen=True, slots=True)
class Principal:
    actor: str                  # written to audit rows: "apikey:<name>" or "jwt:<sub>"
    role: Role
    account_id: UUID | None     # set: customer-scoped

    @property
    def scope(self) -> UUID | None:
        return self.account_id


@dataclass(frozen=True, slots=True)
class Caller:
    """What a route handler gets: the principal and the id of this request."""

    principal: Principal
    request_id: str

    @property
    def scope(self) -> UUID | None:
        return self.principal.account_id

    @property
    def actor(self) -> str:
        return self.principal.actor


class AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Authenticator:
    """Turns request headers into a principal, or refuses with 401/403."""

    def __init__(self, api: ApiSettings, pool: Pool) -> None:
        self.api = api
        self.pool = pool
        self._jwks: jwt.PyJWKClient | None = None
        self._lock = threading.Lock()

    def authenticate(self, authorization: str | None, api_key: str | None) -> Principal:
        """One credential per request: with both headers, which one the caller meant is a guess
        (an invalid token beside a valid key must not pass), so both are refused."""
        if api_key is not None and authorization is not None:
            raise AuthError(401, "send one credential: a Bearer token or an X-API-Key header, not both")
        if api_key:
            return self._from_key(api_key)
        if not authorization:
            raise AuthError(401, "credentials required: a Bearer token or an X-API-Key header")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError(401, "the Authorization header must be 'Bearer <token>'")
        if token.startswith(API_KEY_PREFIX):
            return self._from_key(token)
        return self._from_jwt(token)

    def _from_key(self, key: str) -> Principal:
        with self.pool.connection() as conn:
            row = conn.execute(
                "UPDATE auth.api_keys SET last_used_at = now()"
                " WHERE key_sha256 = %s AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
                " RETURNING name, role, account_id", (key_digest(key),)).fetchone()
        if row is None:
            raise AuthError(401, "unknown, revoked or expired API key")
        return Principal(f"apikey:{row[0]}", Role(row[1]), row[2])

    def _signing_key(self, token: str) -> tuple[Any, list[str]]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError(401, "malformed bearer token") from None
        alg = header.get("alg")
        if alg == "HS256" and self.api.jwt_secret:
            return self.api.jwt_secret, ["HS256"]
        if alg in _ASYMMETRIC and self.api.jwks_url:
            with self._lock:
                if self._jwks is None:
                    self._jwks = jwt.PyJWKClient(self.api.jwks_url, cache_keys=True, lifespan=300, timeout=5)
            try:
                return self._jwks.get_signing_key_from_jwt(token).key, [str(alg)]
            except jwt.PyJWKClientError as exc:
                log.warning("JWKS lookup failed: %s", exc)
                raise AuthError(401, "the token's signing key is not known") from None
        raise AuthError(401, f"tokens signed with {alg!r} are not accepted here")

    def _from_jwt(self, token: str) -> Principal:
        key, algorithms = self._signing_key(token)
        try:
            claims = jwt.decode(token, key, algorithms=algorithms, audience=self.api.audience,
                                issuer=self.api.issuer, leeway=30,
                                options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.PyJWTError as exc:
            raise AuthError(401, f"invalid bearer token: {exc}") from None
        try:
            role = Role(str(claims.get("role")))
        except ValueError:
            raise AuthError(403, "the token's role claim must be admin, operator or read-only") from None
        account: UUID | None = None
        if claims.get("account_id") is not None:
            try:
                account = UUID(str(claims["account_id"]))
            except ValueError:
                raise AuthError(401, "the token's account_id claim is not a UUID") from None
            if role is Role.ADMIN:
                raise AuthError(403, "a customer-scoped token cannot carry the admin role")
        return Principal(f"jwt:{claims['sub']}", role, account)


# Only for the OpenAPI document: the gate middleware does the real work.
bearer_scheme = HTTPBearer(auto_error=False, scheme_name="bearer", bearerFormat="JWT",
                           description="A JWT (HS256, or signed by a key of api.jwks_url) with a role claim")
key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey",
                          description="An API key made with `warp api-keys create`")


@dataclass(frozen=True, slots=True)
class Access:
    """A route's policy: the least role, and whether customer-scoped principals may use it."""

    role: Role
    customers: bool


def allow(role: Role, customers: bool = False) -> Callable[..., Caller]:
    """Dependency that admits principals with at least ``role``; customer-scoped ones only if
    ``customers``. The policy is attached to the function so the OpenAPI document can show it."""

    def check(request: Request, _bearer: Any = Security(bearer_scheme), _key: Any = Security(key_scheme)) -> Caller:
        principal = getattr(request.state, "principal", None)
        if not isinstance(principal, Principal):
            raise ApiError(401, "credentials required")
        if principal.role.rank < role.rank:
            raise ApiError(403, f"this needs the {role.value} role; the caller has {principal.role.value}")
        if principal.account_id is not None and not customers:
            raise ApiError(403, "customer-scoped credentials cannot use this route")
        return Caller(principal, str(getattr(request.state, "request_id", "")))

    check.warp_access = Access(role, customers)  # type: ignore[attr-defined]
    return check


READ = allow(Role.READ_ONLY)
READ_OWN = allow(Role.READ_ONLY, customers=True)
OPERATE = allow(Role.OPERATOR)
OPERATE_OWN = allow(Role.OPERATOR, customers=True)
ADMIN = allow(Role.ADMIN)
