"""Gate: the ASGI middleware every request passes before any route code runs.

In order: give the request an id (echoed as ``X-Request-ID`` and in the envelope), refuse a
body larger than ``api.max_body_bytes`` (413: at once when Content-Length says so, else as soon
as the streamed body passes the limit), authenticate (401/403) — all before a byte of the body
is parsed, so an unauthenticated client cannot make the server parse anything.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

import anyio
import psycopg
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from routing_engine.entrypoints.api.envelope import error_response
from routing_engine.entrypoints.api.principals import Authenticator, AuthError

_GOOD_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class Gate:
    def __init__(self, app: ASGIApp, authenticator: Authenticator, max_body_bytes: int,
                 public: frozenset[str], protected_prefix: str, on_write: Callable[[], None]) -> None:
        self.app = app
        self.authenticator = authenticator
        self.max_body = max_body_bytes
        self.public = public
        self.prefix = protected_prefix
        self.on_write = on_write

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        offered = headers.get("x-request-id", "")
        request_id = offered if _GOOD_ID.match(offered) else "req_" + secrets.token_hex(8)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status_seen: list[int] = []

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(int(message["status"]))
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        length = headers.get("content-length", "")
        if length and (not length.isdigit() or int(length) > self.max_body):
            status = 413 if length.isdigit() else 400
            await error_response(status, request_id, f"request body larger than {self.max_body} bytes"
                                 if status == 413 else "bad Content-Length")(scope, receive, send_with_id)
            return

        path: str = scope["path"]
        if path.startswith(self.prefix) and path not in self.public:
            try:
                state["principal"] = await anyio.to_thread.run_sync(
                    self.authenticator.authenticate, headers.get("authorization"), headers.get("x-api-key"))
            except AuthError as exc:
                extra = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
                await error_response(exc.status, request_id, exc.message, headers=extra)(
                    scope, receive, send_with_id)
                return
            except psycopg.Error:
                await error_response(503, request_id, "the database is unavailable")(scope, receive, send_with_id)
                return

        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise HTTPException(413, f"request body larger than {self.max_body} bytes")
            return message

        await self.app(scope, counted_receive, send_with_id)
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and status_seen and status_seen[0] < 400:
            self.on_write()
