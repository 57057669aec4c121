"""The LRN adapters against real servers: Postgres LNP table, a local HTTP dip service, Redis."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import psycopg
import pytest
import redis

from routing_engine.adapters.lrn_sources import HttpLnp, LocalLnp, RedisLrnCache
from routing_engine.domain import lrn
from routing_engine.domain.numbers import normalise

PORTED = {"12125551234": "13055559999"}


class DipHandler(BaseHTTPRequestHandler):
    delay_s = 0.0

    def do_GET(self) -> None:  # noqa: N802
        tn = parse_qs(urlparse(self.path).query).get("tn", [""])[0]
        if self.delay_s:
            time.sleep(self.delay_s)  # a slow dip service, the thing under test
        malformed = tn == "12125550000"
        body = b"<html>oops</html>" if malformed else json.dumps({"tn": tn, "lrn": PORTED.get(tn)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def dip_server() -> Iterator[tuple[str, type[DipHandler]]]:
    handler = type("Handler", (DipHandler,), {"delay_s": 0.0})
    server = ThreadingHTTPServer(("127.0.0.5", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.5:{server.server_address[1]}/lrn", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_http_source_answers_ported_and_not_ported(dip_server: tuple[str, type[DipHandler]]) -> None:
    url, _ = dip_server
    source = HttpLnp(url, 500)
    assert source.lookup("12125551234") == "13055559999"
    assert source.lookup("12125559876") is None


def test_slow_http_source_fails_within_its_timeout(dip_server: tuple[str, type[DipHandler]]) -> None:
    url, handler = dip_server
    handler.delay_s = 1.0
    started = time.monotonic()
    result = lrn.resolve(normalise("12125551234"), None, HttpLnp(url, 200))
    assert result.source == "failed" and "http" in (result.error or "")
    assert time.monotonic() - started < 0.9


def test_malformed_http_reply_is_a_failed_dip(dip_server: tuple[str, type[DipHandler]]) -> None:
    url, _ = dip_server
    assert lrn.resolve(normalise("12125550000"), None, HttpLnp(url, 500)).source == "failed"


def test_unreachable_http_source_is_a_failed_dip() -> None:
    result = lrn.resolve(normalise("12125551234"), None, HttpLnp("http://127.0.0.5:9/lrn", 300))
    assert result.source == "failed"


def test_local_table_source(db: psycopg.Connection, database: str) -> None:
    db.execute("INSERT INTO routing.lnp (tn, lrn) VALUES ('12125551234', '13055559999')")
    source = LocalLnp(database, 200)
    assert source.lookup("12125551234") == "13055559999"
    assert source.lookup("12125559876") is None


def test_local_table_source_unreachable_fails_fast_after_the_first_failure() -> None:
    source = LocalLnp("postgresql://warp@127.0.0.1:1/none", 200, pause_after_failure_s=30)
    with pytest.raises(lrn.LrnError):
        source.lookup("12125551234")
    started = time.monotonic()
    with pytest.raises(lrn.LrnError, match="recent failure"):
        source.lookup("12125551234")
    assert time.monotonic() - started < 0.05


def test_redis_cache_keeps_answers_for_the_ttl(redis_client: redis.Redis, db: psycopg.Connection,
                                              database: str) -> None:
    db.execute("INSERT INTO routing.lnp (tn, lrn) VALUES ('12125551234', '13055559999')")
    cache = RedisLrnCache(redis_client)
    first = lrn.resolve(normalise("12125551234"), cache, LocalLnp(database, 200))
    second = lrn.resolve(normalise("12125551234"), cache, LocalLnp(database, 200))
    assert (first.source, second.source, second.lrn) == ("local", "cache", "13055559999")
    assert 3590 < redis_client.ttl("warp:lrn:12125551234") <= 3600
    lrn.resolve(normalise("12125559876"), cache, LocalLnp(database, 200))
    assert redis_client.get("warp:lrn:12125559876") == lrn.NOT_PORTED
