"""Hostile input and what attackers can learn: malformed SIP under valid traffic, a scanner from
an unknown address, topology hiding per trunk, and secrets kept out of logs, CDRs and ps."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from routing_engine.adapters.sipcheck import options_ping
from routing_engine.domain.credentials import ha1_md5
from routing_engine.settings import POSTGRES_SECRET, REDIS_SECRET, Settings
from tests.e2e import provision
from tests.e2e.harness import (
    Node,
    RawUA,
    call_id_of,
    cdr,
    header,
    kamailio_node,
    sipp,
    vendor,
    wait_for,
)
from tests.e2e.test_resilience import group_pids

pytestmark = pytest.mark.e2e

PROXY = "127.0.0.190"
HIDDEN, EXPOSED, DIGEST, LOAD, VENDOR = "127.0.0.191", "127.0.0.192", "127.0.0.193", "127.0.0.194", "127.0.0.195"
ATTACKER, SCANNER = "127.0.0.196", "127.0.0.198"
DIALED, CALLER = "12125551234", "13055550100"
UNSOLD = "442079460000"  # hostile requests are decided on, but never reach the vendor
REALM, USER = "warp.local", "hostile-user"
PASSWORD, NONCE_SECRET = "pw-Zq81-never-logged", "nonce-Xk44-never-shown"
SERVER = "Carrier-Edge"


@pytest.fixture(scope="module")
def world(module_db: psycopg.Connection) -> dict[str, tuple[uuid.UUID, uuid.UUID]]:
    db = module_db
    provision.reset(db)
    plan = provision.plan(db, "hostile", [provision.vendor(db, "target", VENDOR, {"1": "0.0050"})])
    ids = {name: provision.customer(db, f"H-{name}", f"{ip}/32", plan)
           for name, ip in (("hidden", HIDDEN), ("exposed", EXPOSED), ("load", LOAD))}
    db.execute("UPDATE trunks.trunks SET topology_hiding = false WHERE id = %s", (ids["exposed"][1],))
    account, trunk = ids["hidden"]
    (dig,) = db.execute("INSERT INTO trunks.trunks (account_id, name, routing_plan_id, auth_mode)"
                        " VALUES (%s, 'digest', %s, 'digest') RETURNING id", (account, plan)).fetchone()
    db.execute("INSERT INTO trunks.trunk_auth (account_id, trunk_id, username, realm, ha1) VALUES (%s, %s, %s, %s, %s)",
               (account, dig, USER, REALM, ha1_md5(USER, REALM, PASSWORD)))
    return ids


@pytest.fixture(scope="module")
def node(world: dict[str, tuple[uuid.UUID, uuid.UUID]], clean_redis: redis.Redis, e2e_env: dict[str, str],
         settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    # the database given as a URL with its password in it (the embedded cluster's generated one),
    # Redis the embedded way (its password read from the secrets folder)
    dsn = settings.embedded_database_url()
    assert settings.embedded_secret(POSTGRES_SECRET) and settings.embedded_secret(POSTGRES_SECRET) in dsn
    with kamailio_node(e2e_env, PROXY, tmp_path_factory.mktemp("hostile"), extra_env={
            "WARP_SIP__SERVER_HEADER": SERVER, "WARP_AUTH__NONCE_SECRET": NONCE_SECRET,
            "WARP_DATABASE__URL": dsn, "WARP_NODE__NAME": "hostile-node"}) as n:
        yield n


def message_lines(message: str) -> list[str]:
    return [line for line in message.splitlines() if line]


# ------------------------------------------------------------------ topology hiding

def test_topology_is_hidden_both_ways_unless_the_trunk_turns_it_off(node: Node, tmp_path: Path) -> None:
    with vendor("vendor_answer.xml", VENDOR, tmp_path, calls=2) as gw:
        hidden = sipp("customer_call.xml", HIDDEN, tmp_path, remote=node.target, service=DIALED,
                      keys={"caller": CALLER})
        assert hidden.wait() == 0, hidden.report()
        exposed = sipp("customer_call.xml", EXPOSED, tmp_path, remote=node.target, service=DIALED,
                       keys={"caller": CALLER})
        assert exposed.wait() == 0, exposed.report()
        assert gw.wait() == 0, gw.report()
        invites = {call_id_of(uac): next(i for i in gw.received("INVITE") if call_id_of(uac) in i)
                   for uac in (hidden, exposed)}
    routing = ("Via", "Record-Route", "Contact", "Route")
    # what the vendor saw of the hidden customer: only the proxy
    seen_by_vendor = invites[call_id_of(hidden)]
    assert not [h for name in routing for h in header(seen_by_vendor, name) if HIDDEN in h]
    assert header(seen_by_vendor, "Record-Route") == [] and len(header(seen_by_vendor, "Via")) == 1
    # what the hidden customer saw of the vendor: only the proxy, in every reply and in the BYE's answer
    for reply in hidden.received("SIP/2.0"):
        assert not [h for name in routing for h in header(reply, name) if VENDOR in h], reply
        assert header(reply, "Record-Route") == []
    # the trunk with topology hiding off: routing headers pass as they are
    seen_exposed = invites[call_id_of(exposed)]
    assert any(EXPOSED in h for h in header(seen_exposed, "Contact"))
    assert any(PROXY in h for h in header(seen_exposed, "Record-Route"))
    answered = [r for r in exposed.received("SIP/2.0 200") if "INVITE" in header(r, "CSeq")[0]]
    assert any(VENDOR in h for h in header(answered[0], "Contact"))


# ------------------------------------------------------------------ malformed and hostile SIP

def hostile_messages() -> list[bytes]:
    """Broken and hostile requests; the ones from HIDDEN's address reach the Python decision
    (an ACL customer's), those from ATTACKER's the challenge of an unknown source."""
    def invite(user: str = UNSOLD, caller: str = CALLER, display: str = "", extra: str = "", body: str = "",
               drop: str = "", source: str = HIDDEN, cseq: str = "1 INVITE", length: int | None = None) -> bytes:
        cid = uuid.uuid4().hex
        lines = [f"INVITE sip:{user}@{PROXY} SIP/2.0",
                 f"Via: SIP/2.0/UDP {source}:5099;branch=z9hG4bK{cid}",
                 f"From: {display}<sip:{caller}@{source}>;tag={cid[:8]}", f"To: <sip:{user}@{PROXY}>",
                 f"Call-ID: {cid}", f"CSeq: {cseq}", "Max-Forwards: 70", f"Contact: <sip:{caller}@{source}:5099>"]
        lines = [line for line in lines if not (drop and line.startswith(drop + ":"))]
        if extra:
            lines.append(extra)
        lines.append(f"Content-Length: {len(body) if length is None else length}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8", "surrogateescape")

    metachars = ["'; DROP TABLE cdr.cdrs; --", "1' OR '1'='1", "$(touch /tmp/warp-pwned)", "`id`", "a|b;c&d",
                 "%00%0d%0a", "../../etc/passwd", "\\x00", "{{7*7}}", "%s%s%s%n"]
    out: list[bytes] = [
        b"", b"\r\n\r\n", b"\x00" * 64, b"garbage that is not SIP at all\r\n\r\n",
        b"INVITE\r\n\r\n", b"INVITE sip:x SIP/3.0\r\n\r\n", b"FOO bar baz\r\nVia: nothing\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.196:5099;branch=z9hG4bKx\r\n\r\n",
        invite(drop="Via"), invite(drop="From"), invite(drop="To"), invite(drop="Call-ID"), invite(drop="CSeq"),
        invite(cseq="abc INVITE"), invite(cseq="1 BYE"), invite(length=5000), invite(length=-1),
        invite(extra="Via: " + ";".join(["x"] * 500)), invite(extra="X-Big: " + "A" * 8000),
        invite(extra="\r\n".join(f"Via: SIP/2.0/UDP 10.0.0.{i % 250}:5060;branch=z9hG4bK{i}" for i in range(60))),
        invite(body="v=0\r\n" + "a=x\r\n" * 1500),
        invite(user="\udcff\udcfe", caller="\udcc3("), invite(display='"\udcff\udcfe" '),
        invite(user="not-a-number"), invite(caller=""), invite(user=""),
        invite(source=ATTACKER),  # unknown source: challenged, never routed
    ]
    for text in metachars:
        out.append(invite(user=text.replace(" ", "%20")))
        out.append(invite(caller=text.replace(" ", "%20"), display=f'"{text}" '))
        out.append(invite(display=f'"{text}" ', source=ATTACKER))
    out.append(("REGISTER sip:" + PROXY + " SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.196:5099;branch=z9hG4bKreg\r\n"
                "From: <sip:x'--@" + PROXY + ">;tag=1\r\nTo: <sip:x'--@" + PROXY + ">\r\nCall-ID: reg-meta\r\n"
                "CSeq: 1 REGISTER\r\nAuthorization: Digest username=\"a' OR 1=1 --\", realm=\"warp.local\","
                " nonce=\"x\", uri=\"sip:" + PROXY + "\", response=\"00\"\r\nContent-Length: 0\r\n\r\n").encode())
    return out


def test_malformed_and_hostile_sip_leaves_every_worker_up_while_valid_calls_complete(
        node: Node, tmp_path: Path, module_db: psycopg.Connection) -> None:
    workers = group_pids(node.kamailio.pid)  # type: ignore[union-attr]
    messages = hostile_messages()
    with vendor("vendor_answer.xml", VENDOR, tmp_path, calls=30) as gw:
        load = sipp("customer_call.xml", LOAD, tmp_path, remote=node.target, service=DIALED, keys={"caller": CALLER},
                    calls=30, hold_ms=100, extra=["-r", "10"])
        udp = {ip: RawUA(ip, 5099) for ip in (HIDDEN, ATTACKER)}
        try:
            for _ in range(2):
                for data in messages:
                    source = ATTACKER if ATTACKER.encode() in data else HIDDEN
                    if len(data) < 9000:
                        udp[source].sock.sendto(data, (PROXY, 5060))
                    with socket.create_connection((PROXY, 5060), timeout=5,
                                                  source_address=(source, 0)) as tcp:
                        tcp.sendall(data + b"X-Padding: " + b"B" * 70_000 + b"\r\n\r\n")
            for ua in udp.values():
                ua.drain(quiet_s=0.5)
        finally:
            for ua in udp.values():
                ua.close()
        assert load.wait(timeout_s=60) == 0, load.report()  # every valid call completed
        assert gw.wait(timeout_s=30) == 0, gw.report()
    assert options_ping(PROXY, 5060) == 200
    assert group_pids(node.kamailio.pid) == workers, "a worker died or was replaced"  # type: ignore[union-attr]
    log = node.log_text()
    assert "Traceback" not in log and "unhandled" not in log, log[-3000:]
    assert module_db.execute("SELECT count(*) FROM cdr.cdrs").fetchone()[0] > 0  # the table is still there


def test_a_number_that_is_not_utf8_text_is_a_bad_request_not_a_server_error(node: Node) -> None:
    ua = RawUA(HIDDEN, 5098)
    try:
        request = (f"INVITE sip:{UNSOLD}@{PROXY} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {HIDDEN}:5098;branch=z9hG4bKnu8\r\n"
                   f"From: <sip:\udcc3(@{HIDDEN}>;tag=nu8\r\nTo: <sip:x@{PROXY}>\r\n"
                   f"Call-ID: not-utf8-{uuid.uuid4()}\r\n"
                   "CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        ua.sock.sendto(request.encode("utf-8", "surrogateescape"), (PROXY, 5060))
        reply, _ = ua.recv_until(lambda m: m.startswith("SIP/2.0 4") or m.startswith("SIP/2.0 5"))
        assert reply.startswith("SIP/2.0 400 Bad Request"), reply
    finally:
        ua.close()


# ------------------------------------------------------------------ scanners

def scan(ua: RawUA, request: str) -> str:
    ua.send(request, (PROXY, 5060))
    reply, _ = ua.recv_until(lambda m: m.startswith("SIP/2.0") and not m.startswith("SIP/2.0 100"))
    return reply


def anonymous(reply: str) -> list[str]:
    """A reply minus what differs per request (ids, tags, nonces, Via)."""
    return [line for line in message_lines(reply)
            if not line.startswith(("Via", "From", "To", "Call-ID", "CSeq", "Content-Length"))
            and "nonce=" not in line]


def test_a_scanner_from_an_unknown_address_learns_nothing_useful(node: Node) -> None:
    ua = RawUA(SCANNER, 5099)

    def request(method: str, user: str) -> str:
        n = uuid.uuid4().hex
        return (f"{method} sip:{user}@{PROXY} SIP/2.0\nVia: SIP/2.0/UDP {SCANNER}:5099;branch=z9hG4bK{n}\n"
                f"From: <sip:{user}@{PROXY}>;tag={n[:6]}\nTo: <sip:{user}@{PROXY}>\nCall-ID: {n}\n"
                f"CSeq: 1 {method}\nContact: <sip:{user}@{SCANNER}:5099>\nMax-Forwards: 70\nContent-Length: 0\n\n")

    try:
        replies = {(m, u): scan(ua, request(m, u)) for m in ("INVITE", "REGISTER")
                   for u in (USER, "no-such-user-4711", DIALED)}
        options = scan(ua, request("OPTIONS", ""))
        for method in ("INVITE", "REGISTER"):
            shapes = {tuple(anonymous(replies[(method, u)])) for u in (USER, "no-such-user-4711", DIALED)}
            assert len(shapes) == 1, f"{method} answers differ by user: {shapes}"
        for reply in [*replies.values(), options]:
            assert header(reply, "Server") == [SERVER], reply
            assert "kamailio" not in reply.lower() and "warp" not in reply.lower().replace("warp.local", "")
        for (method, _), reply in replies.items():
            if method == "INVITE":
                ua.send(reply_ack(reply), (PROXY, 5060))
    finally:
        ua.close()


def reply_ack(reply: str) -> str:
    lines = message_lines(reply)
    keep = [line for line in lines if line.startswith(("Via", "From", "To", "Call-ID"))]
    return "\n".join([f"ACK sip:{DIALED}@{PROXY} SIP/2.0", *keep, "CSeq: 1 ACK", "Content-Length: 0", "", ""])


# ------------------------------------------------------------------ secrets

def _cmdlines(pids: list[int]) -> str:
    return " ".join(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    for pid in pids)


def test_secrets_never_appear_in_logs_cdrs_or_the_command_line(node: Node, tmp_path: Path, settings: Settings,
                                                               module_db: psycopg.Connection,
                                                               clean_redis: redis.Redis) -> None:
    with vendor("vendor_answer.xml", VENDOR, tmp_path) as gw:
        uac = sipp("customer_call_auth.xml", DIGEST, tmp_path, remote=node.target, service=DIALED,
                   keys={"caller": CALLER}, extra=["-au", USER, "-ap", PASSWORD])
        assert uac.wait() == 0, uac.report()
        assert gw.wait() == 0, gw.report()
    wrong = sipp("customer_call_auth.xml", DIGEST, tmp_path, local_port=5070, remote=node.target, service=DIALED,
                 keys={"caller": CALLER}, extra=["-au", USER, "-ap", PASSWORD + "-typo"])
    wrong.wait()
    row = cdr(module_db, call_id_of(uac))
    db_password, redis_password = settings.embedded_secret(POSTGRES_SECRET), settings.embedded_secret(REDIS_SECRET)
    assert db_password and redis_password  # the embedded servers have passwords, and the node used them:
    assert row is not None  # the companion wrote the CDR (Postgres), and topos kept the dialog in Redis
    assert any(key.startswith(("d:z:", "b:x:")) for key in clean_redis.scan_iter(count=1000))  # topos records
    secrets = (PASSWORD, NONCE_SECRET, db_password, redis_password)
    postmaster = int((settings.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    redis_server = int((settings.data_dir / "redis" / "redis.pid").read_text().strip())
    places = {
        "kamailio log": node.log_text(),
        "companion log": (node.log_path.parent / "cdr-emitter.log").read_text(errors="replace"),
        "CDR": repr(row),
        "Kamailio's command line": _cmdlines(group_pids(node.kamailio.pid)),  # type: ignore[union-attr]
        "companion's command line": _cmdlines(group_pids(node.emitter.pid)),  # type: ignore[union-attr]
        "servers' command lines": _cmdlines([postmaster, *group_pids(postmaster), redis_server]),
        "Postgres log": (settings.data_dir / "postgres" / "server.log").read_text(errors="replace"),
        "Redis log": (settings.data_dir / "redis" / "redis.log").read_text(errors="replace"),
        "what the vendor received": gw.trace(),
    }
    assert [where for where, text in places.items() if not text] == [], "nothing to look at there"
    # named by where, never shown (a failing assertion would print it in the test output)
    leaks = sorted({where for where, text in places.items() for secret in secrets if secret in text})
    assert leaks == [], f"a secret shows in: {', '.join(leaks)}"
    assert wait_for(lambda: "Proxy-Authorization" not in gw.trace(), 1, "credentials consumed")


def test_no_python_exception_escaped(node: Node) -> None:
    log = node.log_text()
    assert "unhandled" not in log and "Traceback" not in log, log[-3000:]
