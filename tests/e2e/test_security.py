"""Attacks on the SIP edge, through a real Kamailio node: an open relay by a forged in-dialog
request, SIP sent to the node's own services, digest replay, blocking a customer by spoofing
its address, what a blocked source gets, and floods (requests and idle TCP connections).

Every attacker and peer has its own address in 127.0.1.0/24."""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from routing_engine.domain.credentials import ha1_md5
from tests.e2e import provision
from tests.e2e.harness import Node, RawUA, cdr, header, kamailio_node, sipp, vendor, wait_for

pytestmark = pytest.mark.e2e

PROXY = "127.0.1.1"
CUSTOMER, DIGEST_UA, VENDOR, ATTACKER, SPOOFED = "127.0.1.2", "127.0.1.3", "127.0.1.4", "127.0.1.5", "127.0.1.6"
TRAPPED_VENDOR, SERVICE, FLOODER, TCP_TRUNK, GUESSER = "127.0.1.7", "127.0.1.8", "127.0.1.9", "127.0.1.10", "127.0.1.11"
SERVICE_PORT = 18080  # the node's admin API address in this module's settings
DIALED, CALLER, TRAP = "12125551234", "13055550100", "4420"  # 4420...: only the trapped vendor sells it
REALM, USER, PASSWORD = "warp.local", "sec-user", "pw-Sec-4471"
LIFETIME_S = 2
BUSY = {"reject_code": "486", "reject_reason": "Busy"}
DEFAULT_CPS = 3


@pytest.fixture(scope="module")
def world(module_db: psycopg.Connection) -> dict[str, uuid.UUID]:
    db = module_db
    provision.reset(db)
    good = provision.vendor(db, "honest", VENDOR, {"1": "0.0050"})
    # a configuration row naming one of the node's own services (here: its admin API)
    trapped = provision.vendor(db, "trapped", SERVICE, {TRAP: "0.0010"}, port=SERVICE_PORT)
    plan = provision.plan(db, "sec", [good, trapped])
    account, trunk = provision.customer(db, "SEC-1", f"{CUSTOMER}/32", plan)
    db.execute("INSERT INTO trunks.trunk_access_lists (account_id, trunk_id, cidr) VALUES (%s, %s, %s)",
               (account, trunk, f"{TCP_TRUNK}/32"))
    (dig,) = db.execute("INSERT INTO trunks.trunks (account_id, name, routing_plan_id, auth_mode)"
                        " VALUES (%s, 'digest', %s, 'digest') RETURNING id", (account, plan)).fetchone()
    db.execute("INSERT INTO trunks.trunk_auth (account_id, trunk_id, username, realm, ha1) VALUES (%s, %s, %s, %s, %s)",
               (account, dig, USER, REALM, ha1_md5(USER, REALM, PASSWORD)))
    return {"account": account, "trunk": trunk, "digest": dig}


@pytest.fixture(scope="module")
def node(world: dict[str, uuid.UUID], clean_redis: redis.Redis, e2e_env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with kamailio_node(e2e_env, PROXY, tmp_path_factory.mktemp("security"), extra_env={
            "WARP_API__LISTEN": f"{SERVICE}:{SERVICE_PORT}", "WARP_SIP__TCP_LIFETIME_S": str(LIFETIME_S),
            "WARP_AUTH__FAILURES_BEFORE_BLOCK": "3", "WARP_NODE__NAME": "security-node",
            "WARP_SIP__DEFAULT_TRUNK_CPS": str(DEFAULT_CPS), "WARP_AUTH__BLOCK_REFRESH_MS": "200"}) as n:
        yield n


def request(method: str, source: str, *, ruri: str = f"sip:{DIALED}@{PROXY}", to_tag: str = "", call_id: str = "",
            from_tag: str = "", extra: tuple[str, ...] = (), port: int = 5099, transport: str = "UDP",
            cseq: int = 1) -> str:
    branch = uuid.uuid4().hex
    lines = [f"{method} {ruri} SIP/2.0", f"Via: SIP/2.0/{transport} {source}:{port};branch=z9hG4bK{branch};rport",
             f"From: <sip:{CALLER}@{source}>;tag={from_tag or branch[:8]}",
             f"To: <sip:{DIALED}@{PROXY}>" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: {call_id or uuid.uuid4().hex}", f"CSeq: {cseq} {method}", "Max-Forwards: 70",
             f"Contact: <sip:{CALLER}@{source}:{port}>", *extra, "Content-Length: 0", "", ""]
    return "\n".join(lines)


def final(ua: RawUA, timeout_s: float = 5) -> str:
    reply, _ = ua.recv_until(lambda m: m.startswith("SIP/2.0") and not m.startswith("SIP/2.0 100"), timeout_s)
    return reply


@contextlib.contextmanager
def raw(ip: str, port: int = 5099) -> Iterator[RawUA]:
    ua = RawUA(ip, port)
    try:
        yield ua
    finally:
        ua.close()


def tcp_final(conn: socket.socket) -> bytes:
    """The first reply but 100 on a TCP connection (replies here carry no body)."""
    data = b""
    while True:
        while b"\r\n\r\n" in data:
            message, data = data.split(b"\r\n\r\n", 1)
            if not message.startswith(b"SIP/2.0 100"):
                return message
        chunk = conn.recv(4096)
        assert chunk, "the node closed the connection without an answer"
        data += chunk


# ------------------------------------------------------------------ 1. no open relay

def test_a_forged_in_dialog_request_with_our_route_is_not_relayed(node: Node) -> None:
    """The toll-fraud relay: any To tag plus `Route: <sip:node;lr>` used to be relayed to any
    Request-URI. A vendor gateway listening there must receive nothing, over UDP and TCP."""
    with raw(VENDOR, 5060) as gw, raw(ATTACKER) as attacker:
        for method in ("INVITE", "MESSAGE", "BYE", "OPTIONS"):
            attacker.send(request(method, ATTACKER, ruri=f"sip:442079460000@{VENDOR}:5060", to_tag="forged",
                                  extra=(f"Route: <sip:{PROXY};lr>",)), (PROXY, 5060))
            reply = final(attacker)
            assert reply.startswith("SIP/2.0 481"), reply
        # a relayed request leaves before the answer to the attacker: nothing came meanwhile
        assert gw.drain(quiet_s=0.2) == []
    with socket.create_connection((PROXY, 5060), timeout=5, source_address=(ATTACKER, 0)) as tcp:
        port = tcp.getsockname()[1]
        text = request("INVITE", ATTACKER, ruri=f"sip:442079460000@{VENDOR}:5060", to_tag="forged", port=port,
                       transport="TCP", extra=(f"Route: <sip:{PROXY};lr;transport=tcp>",))
        tcp.sendall(text.replace("\n", "\r\n").encode())
        data = tcp_final(tcp)
        assert data.startswith(b"SIP/2.0 481"), data[:200]


def test_a_real_calls_identifiers_do_not_let_a_third_address_end_it(node: Node, tmp_path: Path,
                                                                     module_db: psycopg.Connection) -> None:
    """With the Call-ID and both tags of a live call, a BYE from an address that is neither side
    is refused and the call goes on to its normal end."""
    with vendor("vendor_answer.xml", VENDOR, tmp_path) as gw:
        uac = sipp("customer_call.xml", CUSTOMER, tmp_path, remote=node.target, service=DIALED,
                   keys={"caller": CALLER}, hold_ms=3000)
        ok = wait_for(lambda: re.search(r"SIP/2.0 200 OK.*?(?=-{10,})", gw.trace(), re.S), 10, "the vendor's 200")
        answer = ok.group(0)
        call_id = header(answer, "Call-ID")[0]
        from_tag = header(answer, "From")[0].split("tag=")[1].split(";")[0]
        to_tag = header(answer, "To")[0].split("tag=")[1].split(";")[0]
        with raw(ATTACKER) as attacker:
            bye = "\n".join([
                f"BYE sip:{CALLER}@{PROXY} SIP/2.0",
                f"Via: SIP/2.0/UDP {ATTACKER}:5099;branch=z9hG4bK{uuid.uuid4().hex}",
                f"From: <sip:{DIALED}@{VENDOR}>;tag={to_tag}", f"To: <sip:{CALLER}@{CUSTOMER}>;tag={from_tag}",
                f"Call-ID: {call_id}", "CSeq: 9 BYE", "Max-Forwards: 70", f"Route: <sip:{PROXY};lr>",
                "Content-Length: 0", "", ""])
            attacker.send(bye, (PROXY, 5060))
            assert final(attacker).startswith("SIP/2.0 481")
        assert uac.wait() == 0, uac.report()
        assert gw.wait() == 0, gw.report()
    record = cdr(module_db, call_id)
    assert record["sip_code"] == 200 and record["hangup_side"] == "caller"
    assert int(record["duration_s"]) >= 3  # the customer's own BYE ended it, after its hold


# ------------------------------------------------------------------ 2. never to the node's own services

def test_a_gateway_row_naming_a_node_service_gets_no_packet(node: Node, module_db: psycopg.Connection) -> None:
    """The only vendor selling 4420 is configured at the node's admin API address: the call is
    refused and nothing ever reaches that address (UDP or TCP)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((SERVICE, SERVICE_PORT))
    listener.listen(4)
    listener.settimeout(0.2)
    try:
        with raw(SERVICE, SERVICE_PORT) as udp, raw(CUSTOMER, 5097) as customer:
            call_id = f"trap-{uuid.uuid4().hex}"
            customer.send(request("INVITE", CUSTOMER, ruri=f"sip:{TRAP}79460000@{PROXY}", call_id=call_id,
                                  port=5097), (PROXY, 5060))
            reply = final(customer, 10)
            assert reply.startswith("SIP/2.0 5"), reply
            assert udp.drain(quiet_s=0.2) == []
            with pytest.raises(TimeoutError):
                listener.accept()
        record = cdr(module_db, call_id)
        assert int(record["sip_code"]) >= 500
    finally:
        listener.close()
    assert "branch to" in node.log_text() and "this node's admin API" in node.log_text()


# ------------------------------------------------------------------ 4. digest replay

def digest(challenge: str, method: str, uri: str, nc: str = "00000001") -> str:
    nonce = re.search(r'nonce="([^"]+)"', challenge).group(1)  # type: ignore[union-attr]
    ha1 = ha1_md5(USER, REALM, PASSWORD)
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    cnonce = uuid.uuid4().hex[:16]
    response = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    return (f'Proxy-Authorization: Digest username="{USER}", realm="{REALM}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"')


def authorised_invite(ua: RawUA, source: str, call_id: str, ruri: str) -> tuple[str, str]:
    """Challenge, then the INVITE with its credentials: (the credentials header, the reply)."""
    from_tag = uuid.uuid4().hex[:8]
    ua.send(request("INVITE", source, ruri=ruri, call_id=call_id, from_tag=from_tag), (PROXY, 5060))
    challenge = final(ua)
    assert challenge.startswith("SIP/2.0 407"), challenge
    ua.send(request("ACK", source, ruri=ruri, call_id=call_id, from_tag=from_tag,
                    to_tag=header(challenge, "To")[0].split("tag=")[1]), (PROXY, 5060))
    credentials = digest(header(challenge, "Proxy-Authenticate")[0], "INVITE", ruri)
    ua.send(request("INVITE", source, ruri=ruri, call_id=call_id, from_tag=from_tag, cseq=2,
                    extra=(credentials,)), (PROXY, 5060))
    return credentials, final(ua, 10)


def test_captured_credentials_replayed_elsewhere_are_challenged_again(node: Node, tmp_path: Path) -> None:
    ruri = f"sip:{DIALED}@{PROXY}"
    call_id = f"victim-{uuid.uuid4().hex}"
    with vendor("vendor_reject.xml", VENDOR, tmp_path, calls=1, keys=BUSY) as gw:
        with raw(DIGEST_UA) as ua:
            credentials, reply = authorised_invite(ua, DIGEST_UA, call_id, ruri)
            assert reply.startswith("SIP/2.0 486"), reply  # accepted: the vendor answered it
        replays = [
            (ATTACKER, 5099, request("INVITE", ATTACKER, ruri=ruri, extra=(credentials,))),  # other IP, new call
            (ATTACKER, 5099, request("INVITE", ATTACKER, ruri=f"sip:442079460000@{PROXY}", call_id=call_id,
                                     extra=(credentials,))),  # other IP, other number, the same Call-ID
            (DIGEST_UA, 5098, request("INVITE", DIGEST_UA, ruri=ruri, port=5098,
                                      extra=(credentials,))),  # the victim's own address, a new call
            (DIGEST_UA, 5098, request("INVITE", DIGEST_UA, ruri=ruri, port=5098, call_id=call_id, cseq=3,
                                      extra=(credentials,))),  # everything the same: the nonce is spent
        ]
        for source, port, text in replays:
            with raw(source, port) as sender:
                sender.send(text, (PROXY, 5060))
                answer = final(sender)
                assert answer.startswith("SIP/2.0 407") and "stale=true" in answer.lower(), answer
        assert len(gw.received("INVITE")) == 1, "only the genuine INVITE reached the vendor"


# ------------------------------------------------------------------ 5, 6. who can be blocked, and what blocked means

def test_forged_failures_from_a_customers_address_do_not_block_it(node: Node, tmp_path: Path,
                                                                  clean_redis: redis.Redis) -> None:
    """REGISTERs with a made-up nonce, 'from' the digest customer's address: no block. The ACL
    customer's address failing digest (a number its ACL trunk does not take) is never blocked."""
    with raw(DIGEST_UA, 5096) as spoof:
        for n in range(6):
            spoof.send(request("REGISTER", DIGEST_UA, ruri=f"sip:{PROXY}", port=5096, extra=(
                f'Authorization: Digest username="{USER}", realm="{REALM}", nonce="made-up-{n}", '
                f'uri="sip:{PROXY}", response="{"0" * 32}"',)), (PROXY, 5060))
            final(spoof)
    assert not clean_redis.exists(f"warp:block:{DIGEST_UA}")
    with vendor("vendor_reject.xml", VENDOR, tmp_path, calls=1, keys=BUSY), raw(DIGEST_UA) as ua:
        _, reply = authorised_invite(ua, DIGEST_UA, f"after-spoof-{uuid.uuid4().hex}", f"sip:{DIALED}@{PROXY}")
        assert reply.startswith("SIP/2.0 486"), reply


def test_real_guessing_blocks_an_unknown_source_and_it_then_gets_silence_for_everything(
        node: Node, clean_redis: redis.Redis) -> None:
    with raw(GUESSER) as ua:
        for n in range(3):
            call_id, from_tag = f"guess-{n}-{uuid.uuid4().hex}", uuid.uuid4().hex[:8]
            ua.send(request("INVITE", GUESSER, call_id=call_id, from_tag=from_tag), (PROXY, 5060))
            challenge = final(ua)
            wrong = digest(header(challenge, "Proxy-Authenticate")[0], "INVITE", f"sip:{DIALED}@{PROXY}")
            wrong = re.sub(r'response="\w+"', 'response="' + "f" * 32 + '"', wrong)
            ua.send(request("INVITE", GUESSER, call_id=call_id, from_tag=from_tag, cseq=2, extra=(wrong,)),
                    (PROXY, 5060))
            assert final(ua).startswith("SIP/2.0 403")
        assert clean_redis.exists(f"warp:block:{GUESSER}")

        def silent() -> bool:
            """Every worker reads the shared block list within block_refresh_ms: a burst of probes
            (spread over the workers) all unanswered says each of them has it."""
            for _ in range(12):
                ua.send(request("OPTIONS", GUESSER, ruri=f"sip:{PROXY}"), (PROXY, 5060))
            return ua.drain(quiet_s=0.3) == []

        wait_for(silent, 5, "the block to reach every worker")
        for method, ruri in (("OPTIONS", f"sip:{PROXY}"), ("OPTIONS", f"sip:{DIALED}@{PROXY}"),
                             ("MESSAGE", f"sip:{DIALED}@{PROXY}"), ("INVITE", f"sip:{DIALED}@{PROXY}"),
                             ("SUBSCRIBE", f"sip:{DIALED}@{PROXY}"), ("BYE", f"sip:{DIALED}@{PROXY}")):
            ua.send(request(method, GUESSER, ruri=ruri, to_tag="x" if method == "BYE" else ""), (PROXY, 5060))
        assert ua.drain(quiet_s=0.5) == [], "a blocked source gets no answer at all"


# ------------------------------------------------------------------ 7. floods

def test_a_flood_from_an_unknown_address_is_cut_and_a_trunk_keeps_its_rate(node: Node) -> None:
    with raw(FLOODER) as flooder, raw(CUSTOMER, 5095) as trunk:
        for _ in range(100):
            flooder.send(request("OPTIONS", FLOODER, ruri=f"sip:{PROXY}"), (PROXY, 5060))
            trunk.send(request("OPTIONS", CUSTOMER, ruri=f"sip:{PROXY}", port=5095), (PROXY, 5060))
        answered_flooder = [m for m in flooder.drain(quiet_s=0.5) if m.startswith("SIP/2.0 200")]
        answered_trunk = [m for m in trunk.drain(quiet_s=0.5) if m.startswith("SIP/2.0 200")]
    # 20 a second for an unknown address: the 100 went out within a second or two
    assert 0 < len(answered_flooder) <= 40, len(answered_flooder)
    assert len(answered_trunk) == 100
    assert "over its flood limit" in node.log_text()


def test_an_idle_tcp_connection_from_nobody_is_closed_and_a_trunks_is_kept(node: Node) -> None:
    idle = socket.create_connection((PROXY, 5060), timeout=LIFETIME_S * 10, source_address=(ATTACKER, 0))
    trunk = socket.create_connection((PROXY, 5060), timeout=LIFETIME_S * 10, source_address=(TCP_TRUNK, 0))
    try:
        port = trunk.getsockname()[1]
        trunk.sendall(request("OPTIONS", TCP_TRUNK, ruri=f"sip:{PROXY}", port=port, transport="TCP")
                      .replace("\n", "\r\n").encode())
        assert trunk.recv(4096).startswith(b"SIP/2.0 200")
        assert idle.recv(1) == b"", "the idle connection is closed by the node"  # blocks until closed
        trunk.settimeout(LIFETIME_S * 2.5)
        with pytest.raises(TimeoutError):  # still open well past the idle lifetime
            trunk.recv(1)
    finally:
        idle.close()
        trunk.close()


def test_a_trunk_without_its_own_cps_limit_gets_the_default_one(node: Node) -> None:
    """20 INVITEs at once from a trunk whose cps_limit is not set: past the default's bucket the
    calls are refused 503 CPS limit exceeded (they route to the trapped vendor, so the admitted
    ones end at once with a relay failure)."""
    with raw(CUSTOMER, 5094) as ua:
        for n in range(20):
            ua.send(request("INVITE", CUSTOMER, ruri=f"sip:{TRAP}79460000@{PROXY}", port=5094,
                            call_id=f"cps-{n}-{uuid.uuid4().hex}"), (PROXY, 5060))
        finals = []
        while len(finals) < 20:
            finals.append(final(ua, 10))
    refused = [f for f in finals if f.startswith("SIP/2.0 503 CPS limit exceeded")]
    assert len(refused) >= 20 - DEFAULT_CPS - 2, [f.split("\r\n", 1)[0] for f in finals]
    assert all(header(f, "Retry-After") == ["1"] for f in refused)


def test_no_python_exception_escaped(node: Node) -> None:
    log = node.log_text()
    assert log, "the node's log exists"
    assert "unhandled" not in log and "Traceback" not in log, log[-3000:]
