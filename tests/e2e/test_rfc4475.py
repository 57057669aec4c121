"""RFC 4475 conformance: every torture message of section 3, sent to a real node, gets the answer
the RFC asks for under this project's policy.

Policy that shapes the expected answers (the RFC allows a choice in many places):
- an INVITE from an unknown source is challenged (407), a REGISTER too (401): either proves the
  message was parsed, since the challenge needs its Via, From, To, Call-ID and CSeq;
- an OPTIONS whose Request-URI is ours is answered 200 with Allow; one for somebody else's
  domain gets 404 (we relay no OPTIONS, and "not here" is what RFC 4475 3.1.1.2 expects of a
  proxy that does not know the URI);
- any other method is answered 405 with Allow;
- a malformed request gets 400 (505 for a SIP version we do not speak, 416 for a URI scheme we
  do not serve, 420 for a Proxy-Require we do not support, 483 for Max-Forwards 0), never a 500;
- a response without a transaction of ours is dropped silently (RFC 3261 18.1.2, 16.7).

Where Kamailio 5.6 cannot give the RFC's answer, the test expects what it does instead and says
why (``kamailio_drops``): its core parser refuses the message before any script runs, and no
reply can be built from headers that do not parse, so the message is dropped unanswered. That is
the failure policy's "silent drop", never a crash: wsinv (a folded CSeq), badinv01 and badvers
(a Via that does not parse), ncl, quotbal, lwsruri, lwsstart, insuf, multi01 and mcl01.

The messages come from tests/e2e/rfc4475_messages.py (the RFC's text rendered to its exact
octets). Each is sent from its own loopback address, so no limit for one source interferes.
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis

from routing_engine.adapters.sipcheck import options_ping
from tests.e2e import provision
from tests.e2e.harness import Node, kamailio_node
from tests.e2e.rfc4475_messages import BY_NAME, MESSAGES, TortureMessage
from tests.e2e.test_resilience import group_pids

pytestmark = pytest.mark.e2e

NODE = "127.0.5.1"
TCP_SOURCE = "127.0.5.3"
OPTIONS_SOURCE = "127.0.5.4"
VENDOR = "127.0.5.9"
FIRST_SOURCE = 10  # message i is sent from 127.0.5.(10 + i)
SILENCE_S = 1.0  # how long "no answer" is listened for
ANSWER_S = 3.0  # deadline for an expected final answer


@dataclass(frozen=True)
class Expect:
    codes: frozenset[int]  # any of these final codes; empty: no answer at all
    why: str  # the RFC's reason, and ours where the RFC leaves the choice
    limit: str = ""  # where Kamailio cannot give the RFC's answer: what it does instead, and why

    @property
    def silent(self) -> bool:
        return not self.codes


def answer(*codes: int, why: str) -> Expect:
    return Expect(frozenset(codes), why)


def silence(why: str) -> Expect:
    return Expect(frozenset(), why)


def kamailio_drops(rfc: str, why: str) -> Expect:
    """The RFC asks for ``rfc``; Kamailio 5.6's core parser refuses the message before any script
    runs, and a reply cannot be built from a message whose headers do not parse: it is dropped
    unanswered (our failure policy's "silent drop"), logged by the core, and nothing breaks."""
    return Expect(frozenset(), f"RFC: {rfc}", limit=why)


EXPECTED: dict[str, Expect] = {
    # 3.1.1 valid messages: "All elements should treat this as a well-formed request"
    "wsinv": kamailio_drops("3.1.1.1 well formed (folding, LWS, short forms): parsed; its To tag names "
                            "no dialog of ours, so 404/481, never relayed along its Route",
                            "the CSeq value folded onto a second line ('cseq: 0009\\r\\n  INVITE') is 'bad "
                            "cseq' to parse_cseq(); the same message unfolded is challenged (see below)"),
    "intmeth": answer(405, why="3.1.1.2 well formed; an unknown method: a proxy answers 404 for a URI "
                               "it does not know, an endpoint 501; we answer 405 with Allow"),
    "esc01": answer(407, why="3.1.1.3 valid escaping: parsed and challenged"),
    "escnull": answer(401, why="3.1.1.4 escaped NULs are legal: the REGISTER is parsed and challenged"),
    "esc02": answer(405, why="3.1.1.5 % that is not an escape (method RE%47IST%45R is unknown): parsed, "
                             "405 with Allow (an endpoint would answer 501)"),
    "lwsdisp": answer(404, why="3.1.1.6 no LWS before < is valid: an OPTIONS for another domain, 404"),
    "longreq": answer(407, why="3.1.1.7 long values and 34 Vias are valid: parsed and challenged"),
    "dblreq": answer(401, why="3.1.1.8 over UDP the octets after Content-Length are ignored: the "
                              "REGISTER is handled (challenged), the INVITE bits are noise"),
    "semiuri": answer(404, why="3.1.1.9 ; in the user part is valid: an OPTIONS for another domain, 404"),
    "transports": answer(404, why="3.1.1.10 unknown transports in Via are valid: OPTIONS elsewhere, 404"),
    "mpart01": answer(405, why="3.1.1.11 multipart body must be accepted by the parser: a MESSAGE, "
                               "which we do not handle, 405 with Allow"),
    "unreason": silence("3.1.1.12 a well formed response, but to no transaction of ours: dropped"),
    "noreason": silence("3.1.1.13 a well formed response (empty reason) to no transaction: dropped"),
    # 3.1.2 invalid messages
    "badinv01": kamailio_drops("3.1.2.1 extraneous separators: 'should respond with a 400'",
                               "the Via 'SIP/2.0/UDP 192.0.2.15;;,;,,' does not parse: no Via, no reply"),
    "clerr": answer(400, why="3.1.2.2 Content-Length beyond the datagram over UDP: 'should respond with "
                             "a 400 Bad Request'"),
    "ncl": kamailio_drops("3.1.2.3 negative Content-Length: 'should respond with an error'",
                          "Content-Length -999 fails the core's header parser; the 400 cannot be built"),
    "scalar02": answer(400, why="3.1.2.4 CSeq beyond 2**32-1: 'should respond with a 400 Bad Request'"),
    "scalarlg": silence("3.1.2.5 a response with overlarge values: 'will simply discard it'"),
    "quotbal": kamailio_drops("3.1.2.6 unterminated quoted string: 'should return a 400'",
                              "the To header does not parse, so no reply can be built"),
    "ltgtruri": answer(400, why="3.1.2.7 <> around the Request-URI: 'reasonable always to reject ... "
                                "with a 400'"),
    "lwsruri": kamailio_drops("3.1.2.8 LWS inside the Request-URI: 'should respond with a 400'",
                              "parse_first_line() refuses the request line: not even known as a request"),
    "lwsstart": kamailio_drops("3.1.2.9 several SP in the request line: 'acceptable to reject', or be "
                               "liberal and process it",
                               "parse_first_line() refuses the request line: not even known as a request"),
    "trws": answer(400, 404, why="3.1.2.10 SP at the end of the request line: reject, or be liberal "
                                 "(an OPTIONS for another domain, 404)"),
    "escruri": answer(400, 407, why="3.1.2.11 escaped headers in the Request-URI: 400 acceptable, or "
                                    "ignore them (challenge); never translated into headers"),
    "baddate": answer(400, 407, why="3.1.2.12 bad Date zone: reject, or ignore a Date we do not use"),
    "regbadct": answer(400, 401, why="3.1.2.13 Contact with params not in <>: 400 reasonable, or infer "
                                     "the brackets (challenge)"),
    "badaspec": answer(400, 404, why="3.1.2.14 spaces inside the To addr-spec: 'reasonable to reject ... "
                                     "400'; Kamailio's URI parser trims them (liberal): OPTIONS elsewhere, 404"),
    "baddn": answer(400, 404, why="3.1.2.15 non-token display name: 'reasonable always to reject ... 400', "
                                  "or be liberal (we only read the URI): OPTIONS elsewhere, 404"),
    "badvers": kamailio_drops("3.1.2.16 SIP/7.0: 'should respond ... with a 505 Version Not Supported'",
                              "the Via says SIP/7.0 too and parse_via() refuses it: no Via, no reply"),
    "mismatch01": answer(400, why="3.1.2.17 request line OPTIONS, CSeq INVITE: 400"),
    "mismatch02": answer(400, 501, why="3.1.2.18 unknown method, CSeq INVITE: 501, or 400 'also "
                                       "acceptable'"),
    "bigcode": silence("3.1.2.19 a response code of 4294967301: discarded, the receiver must not break"),
    # 3.2 transaction layer
    "badbranch": answer(400, 404, why="3.2.1 branch of only the magic cookie: a parser must not break; "
                                      "reject with 400, or fall back to 2543 matching (OPTIONS, 404)"),
    # 3.3 application layer
    "insuf": kamailio_drops("3.3.1 no Call-ID, From or To: ideally a 400 Bad Request",
                            "receive_msg() discards a request without the required headers before the "
                            "script ('required headers not found in request')"),
    "unkscm": answer(416, why="3.3.2 unknown Request-URI scheme: 416 Unsupported URI Scheme"),
    "novelsc": answer(416, why="3.3.3 a scheme we do not serve (soap.beep): 416"),
    "unksm2": answer(400, 401, why="3.3.4 unknown schemes in To/From/Contact: parsed; a registrar may "
                                   "refuse the From it cannot use (sanity's URI check: 400) or challenge"),
    "bext01": answer(420, why="3.3.5 Proxy-Require we do not support: 420 Bad Extension with "
                              "Unsupported"),
    "invut": answer(407, why="3.3.6 unknown Content-Type: a proxy does not care; challenged"),
    "regaut01": answer(401, why="3.3.7 unknown Authorization scheme: 'should respond with a 401' "
                                "(challenge)"),
    "multi01": kamailio_drops("3.3.8 several values in single-value fields: 'should respond with a 400'",
                              "parse_headers() refuses a second CSeq / Max-Forwards ('duplicate ... header "
                              "field'), and the 400 cannot be built from them"),
    "mcl01": kamailio_drops("3.3.9 conflicting Content-Length values over UDP: 'should respond with an "
                            "error' (400)",
                            "parse_headers() refuses the second Content-Length; no reply can be built"),
    "bcast": silence("3.3.10 a response to nothing of ours (broadcast received=): dropped, never "
                     "sent to a broadcast address"),
    "zeromf": answer(483, why="3.3.11 Max-Forwards 0 at a proxy: 483 Too Many Hops"),
    "cparam01": answer(401, why="3.3.12 Contact header parameters: well formed, challenged"),
    "cparam02": answer(401, why="3.3.13 url-parameter outside <> is a header parameter: challenged"),
    "regescrt": answer(401, why="3.3.14 escaped header in a Contact URI is legal: challenged"),
    "sdp01": answer(407, why="3.3.15 an Accept we cannot satisfy matters to the endpoint: challenged"),
    # 3.4 backward compatibility
    "inv2543": answer(407, why="3.4.1 RFC 2543 syntax (no branch, no tags) must be accepted: challenged"),
}


@pytest.fixture(scope="module")
def node(module_db: psycopg.Connection, clean_redis: redis.Redis, e2e_env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    provision.reset(module_db)
    plan = provision.plan(module_db, "rfc4475", [provision.vendor(module_db, "rfc-v", VENDOR, {"1": "0.0050"})])
    provision.customer(module_db, "RFC-1", f"{OPTIONS_SOURCE}/32", plan)
    with kamailio_node(e2e_env, NODE, tmp_path_factory.mktemp("rfc4475")) as n:
        yield n


def source_of(message: TortureMessage) -> str:
    return f"127.0.5.{FIRST_SOURCE + MESSAGES.index(message)}"


@contextlib.contextmanager
def endpoint(address: str) -> Iterator[tuple[socket.socket, list[socket.socket]]]:
    """A UDP socket on address:5060 to send from, and every port a reply may come back to:
    Kamailio answers the source address at the Via's port (5060 when it has none; one message's
    Via says 5050) unless the Via asks for rport."""
    socks = []
    try:
        for port in (5060, 5050):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((address, port))
            socks.append(sock)
        yield socks[0], socks
    finally:
        for sock in socks:
            sock.close()


def status(data: bytes) -> int | None:
    parts = data.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) >= 2 and parts[0] == b"SIP/2.0" and parts[1].isdigit():
        return int(parts[1])
    return None


def collect(socks: list[socket.socket], until: float, stop_at_final: bool) -> list[bytes]:
    """Everything that arrives on ``socks`` before ``until``; with ``stop_at_final``, up to the
    first final answer."""
    import select

    got: list[bytes] = []
    while (left := until - time.monotonic()) > 0:
        ready, _, _ = select.select(socks, [], [], left)
        for sock in ready:
            data, _ = sock.recvfrom(65535)
            got.append(data)
        if stop_at_final and any((status(d) or 0) >= 200 for d in got):
            break
    return got


def exchange(message: TortureMessage, expect: Expect) -> list[bytes]:
    with endpoint(source_of(message)) as (sender, socks):
        sender.sendto(message.data, (NODE, 5060))
        deadline = time.monotonic() + (SILENCE_S if expect.silent else ANSWER_S)
        return collect(socks, deadline, stop_at_final=not expect.silent)


def finals(replies: list[bytes]) -> list[int]:
    return [code for code in map(status, replies) if code is not None and code >= 200]


# ------------------------------------------------------------------ the message set

def test_the_message_set_is_the_rfcs_whole_section_3() -> None:
    assert len(MESSAGES) == 49 and set(EXPECTED) == set(BY_NAME)
    # octet counts of the RFC's bit-exact archive (appendix A) for the ones notation can get wrong
    assert {n: len(BY_NAME[n].data) for n in ("wsinv", "intmeth", "longreq", "mpart01", "unreason", "trws")} == {
        "wsinv": 1001, "intmeth": 641, "longreq": 3515, "mpart01": 1290, "unreason": 526, "trws": 327}
    assert b"\x00" in BY_NAME["intmeth"].data and BY_NAME["trws"].data.split(b"\r\n", 1)[0].endswith(b"SIP/2.0  ")


@pytest.mark.parametrize("message", MESSAGES, ids=[m.name for m in MESSAGES])
def test_each_torture_message_over_udp_gets_the_answer_the_rfc_asks_for(node: Node, message: TortureMessage) -> None:
    expect = EXPECTED[message.name]
    replies = exchange(message, expect)
    codes = finals(replies)
    assert 500 not in codes, f"{message.name}: a server error"
    if expect.silent:
        assert codes == [], f"{message.name} ({expect.why}) was answered {codes}"
        if expect.limit:
            print(f"{message.section} {message.name}: dropped, not answered as the {expect.why}: {expect.limit}")
        return
    assert codes, f"{message.name} ({expect.why}) got no answer"
    assert codes[0] in expect.codes, f"{message.name} ({expect.why}) was answered {codes[0]}:\n" \
                                     f"{replies[-1].decode(errors='replace')}"
    reply = next(r for r in replies if status(r) == codes[0]).decode(errors="replace")
    if codes[0] in (405, 200):
        assert "\r\nAllow: " in reply and "OPTIONS" in reply.split("\r\nAllow: ", 1)[1].split("\r\n")[0]
    if codes[0] == 420:
        assert "\r\nUnsupported: " in reply, reply


# ------------------------------------------------------------------ our own OPTIONS

def options(ruri: str, source: str, port: int) -> bytes:
    tag = uuid.uuid4().hex[:10]
    return (f"OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {source}:{port};branch=z9hG4bK{tag}\r\n"
            f"From: <sip:probe@{source}>;tag={tag}\r\nTo: <{ruri}>\r\nCall-ID: {tag}@{source}\r\n"
            f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


@pytest.mark.parametrize("ruri", [f"sip:{NODE}", f"sip:{NODE}:5060", f"sip:12125551234@{NODE}",
                                  f"sip:someone@{NODE};transport=udp"])
@pytest.mark.parametrize("source", [OPTIONS_SOURCE, "127.0.5.5"], ids=["customer", "unknown"])
def test_options_to_any_uri_of_ours_is_answered_200_with_allow(node: Node, ruri: str, source: str) -> None:
    with endpoint(source) as (sender, socks):
        sender.sendto(options(ruri, source, 5060), (NODE, 5060))
        replies = collect(socks, time.monotonic() + ANSWER_S, stop_at_final=True)
    assert finals(replies)[:1] == [200], replies
    allow = [line for line in replies[-1].decode().split("\r\n") if line.startswith("Allow: ")]
    assert allow and "OPTIONS" in allow[0], replies[-1]


# ------------------------------------------------------------------ stream transport

def over_tcp(data: bytes, wait_s: float) -> tuple[list[int], bool]:
    """Send ``data`` on a new TCP connection; the final codes read within ``wait_s`` and whether
    the node closed the connection."""
    codes: list[int] = []
    closed = False
    buffer = b""
    with socket.create_connection((NODE, 5060), timeout=5, source_address=(TCP_SOURCE, 0)) as tcp:
        tcp.sendall(data)
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            tcp.settimeout(left)
            try:
                chunk = tcp.recv(65535)
            except TimeoutError:
                break
            if not chunk:
                closed = True
                break
            buffer += chunk
        for part in buffer.split(b"SIP/2.0 ")[1:]:
            code = status(b"SIP/2.0 " + part)
            if code is not None and code >= 200:
                codes.append(code)
    return codes, closed


def test_torture_messages_over_tcp_are_framed_by_content_length(node: Node) -> None:
    # 3.1.1.8 over a stream the "trailing octets" are the next request: both are answered
    codes, _ = over_tcp(BY_NAME["dblreq"].data, ANSWER_S)
    assert sorted(codes) == [401, 407], codes
    # a valid message is parsed over TCP as over UDP
    codes, _ = over_tcp(BY_NAME["longreq"].data, ANSWER_S)
    assert codes == [407], codes
    # 3.1.2.2 over TCP "not much the receiving party could do but wait for more data": no answer
    codes, _ = over_tcp(BY_NAME["clerr"].data, SILENCE_S)
    assert codes == [], codes
    # 3.1.2.3 negative Content-Length over TCP: "the framing error is not recoverable, and the
    # connection should be closed"; an error answer first is fine, a 500 is not
    codes, closed = over_tcp(BY_NAME["ncl"].data, ANSWER_S)
    assert closed and set(codes) <= {400}, (codes, closed)
    # 3.3.9 conflicting Content-Length values over TCP: framing is lost, the connection closed
    codes, closed = over_tcp(BY_NAME["mcl01"].data, ANSWER_S)
    assert closed and set(codes) <= {400}, (codes, closed)


def test_wsinv_is_dropped_only_for_its_folded_cseq(node: Node) -> None:
    """What Kamailio refuses in 3.1.1.1 is the one folded CSeq: with that line unfolded (RFC 3261
    7.3.1 allows replacing the folding by a single SP) the rest of the torture parses. Its Route
    (services.example.com) is left out: an in-dialog request is no business of this test."""
    data = BY_NAME["wsinv"].data
    route = b"Route:\r\n <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\r\n"
    assert b"cseq: 0009\r\n  INVITE" in data and route in data
    unfolded = data.replace(b"cseq: 0009\r\n  INVITE", b"cseq: 0009 INVITE").replace(route, b"")
    with endpoint(source_of(BY_NAME["wsinv"])) as (sender, socks):
        sender.sendto(unfolded, (NODE, 5060))
        replies = collect(socks, time.monotonic() + ANSWER_S, stop_at_final=True)
    # its To tag names no dialog of ours
    assert finals(replies)[:1] in ([404], [481]), replies


# ------------------------------------------------------------------ and the node took it all

def test_after_the_whole_set_the_node_is_up_with_every_worker_and_no_python_error(node: Node) -> None:
    workers = group_pids(node.kamailio.pid)  # type: ignore[union-attr]
    for message in MESSAGES:  # once more, all at once
        with endpoint(source_of(message)) as (sender, _):
            sender.sendto(message.data, (NODE, 5060))
    assert options_ping(NODE, 5060, timeout_s=3) == 200
    # every process there before is still there (Kamailio replaces no worker: one that dies takes
    # the node down); late-forked helpers may have joined since the node first answered
    assert workers <= group_pids(node.kamailio.pid), "a worker died"  # type: ignore[union-attr]
    assert Path(node.log_path).exists()
    log = node.log_text()
    assert "Traceback" not in log and "unhandled" not in log, log[-3000:]
