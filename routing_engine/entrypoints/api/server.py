"""Server: the admin API application and the process that serves it (``warp api``).

``create_app(settings)`` builds the FastAPI app (tests drive it in process with TestClient);
``serve(settings)`` runs it with uvicorn on ``api.listen``. Everything is under /api/v1; the
OpenAPI document is /api/v1/openapi.json, the interactive docs /api/v1/docs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Request

from routing_engine.entrypoints.api import (
    accounts,
    blocking,
    cdrs,
    drafts,
    envelope,
    explain,
    numbers,
    openapi,
    plans,
    rate_plans,
    trunks,
    vendors,
)
from routing_engine.entrypoints.api.envelope import Envelope, ok, request_id_of
from routing_engine.entrypoints.api.gate import Gate
from routing_engine.entrypoints.api.services import Services
from routing_engine.settings import Settings

log = logging.getLogger("warp.api")

PREFIX = "/api/v1"
API_VERSION = "1.0.0"
DESCRIPTION = """The WARP admin API: the validated, audited way to change what the routing core reads.

Every answer is an envelope: `{"success": true, "data": ..., "meta": {"timestamp", "request_id"}}`,
or `{"success": false, "error": {"code", "message", "details"}, "meta": ...}`. Authenticate with
`Authorization: Bearer <JWT>` or `X-API-Key: <key>`. Money is a decimal string."""
ROUTERS = (accounts, trunks, numbers, vendors, plans, rate_plans, blocking, explain, cdrs, drafts)


health_router = APIRouter(tags=["health"], route_class=openapi.PolicyRoute)


@health_router.get("/health", response_model=Envelope[dict[str, str]])
def health(request: Request) -> Any:
    """Liveness: the process answers. Needs no credentials."""
    return ok(request_id_of(request), {"status": "ok"})


def create_app(settings: Settings) -> FastAPI:
    services = Services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        services.close()

    app = FastAPI(title="WARP admin API", version=API_VERSION, description=DESCRIPTION,
                  openapi_url=f"{PREFIX}/openapi.json", docs_url=f"{PREFIX}/docs", redoc_url=None,
                  swagger_ui_oauth2_redirect_url=None, lifespan=lifespan,
                  generate_unique_id_function=lambda route: route.name)
    app.state.services = services
    envelope.install(app)
    for module in ROUTERS:
        app.include_router(module.router, prefix=PREFIX)

    app.include_router(health_router, prefix=PREFIX)
    app.add_middleware(Gate, authenticator=services.authenticator, max_body_bytes=settings.api.max_body_bytes,
                       public=frozenset({f"{PREFIX}/openapi.json", f"{PREFIX}/docs", f"{PREFIX}/health"}),
                       protected_prefix=PREFIX, on_write=services.snapshots.invalidate)
    app.openapi = lambda: openapi.cached_document(app)  # type: ignore[method-assign]
    return app


def listen_address(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"api.listen: expected host:port, got {listen!r}")
    return host.strip("[]"), int(port)


def serve(settings: Settings) -> int:
    host, port = listen_address(settings.api.listen)
    if not settings.api.jwt_secret and not settings.api.jwks_url:
        log.warning("api.jwt_secret and api.jwks_url are empty: only API keys are accepted")
    elif settings.api.jwt_secret and len(settings.api.jwt_secret) < 32:
        log.warning("api.jwt_secret is shorter than 32 characters; use a longer random secret")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", server_header=False,
                proxy_headers=False)
    return 0
