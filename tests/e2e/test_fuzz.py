"""SIP fuzzing in CI: a few thousand mutated requests against a real node while valid calls run.

Seeded and bounded: the seed is fixed (and printed), the count and the pace are constants, so a
failure replays exactly. Two phases:

1. from an unknown address (an attacker: it is challenged, never routed), mutated INVITE,
   OPTIONS, REGISTER, BYE, ACK and CANCEL requests, most over UDP and a share over TCP;
2. from the ACL'd customer's own address, mutated INVITEs: they pass identification and reach
   the Python decision path (numbers, rating, routing) and its refusals, each with a CDR.

Mutations: byte flips, duplicated and truncated headers, huge fields, NUL bytes, invalid UTF-8,
bad Content-Length values, CRLF games (bare LF/CR, early blank line, folding), deep Via stacks.
The fuzz requests dial a number nobody sells and carry no Route header, so none of them can
reach the vendor or leave loopback.

The flood limit (sip.flood_rps, 20 requests a second from an address that is no peer, every
request kind) drops most of the attacker's messages: they get no answer, which is its job. The
test accounts for it by asserting only what must hold for every message (never a 500, never a
crash) and that challenges did come back within the limit.
"""

from __future__ import annotations

import contextlib
import random
import re
import selectors
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import redis

from routing_engine.adapters.sipcheck import options_ping
from tests.e2e import provision
from tests.e2e.harness import Node, call_id_of, cdr, kamailio_node, sipp, vendor, wait_for
from tests.e2e.test_resilience import group_pids

pytestmark = pytest.mark.e2e

SEED = 4475
NODE, ATTACKER, CUSTOMER, VENDOR = "127.0.5.1", "127.0.5.5", "127.0.5.6", "127.0.5.7"
METRICS = "127.0.5.1:9467"
FUZZ_PORT = 5099  # the raw sockets' port (SIPp uses 5060 on the customer's address)
DIALED, CALLER = "12125551234", "13055550100"
UNSOLD = "442079460000"  # no vendor sells it: a fuzzed INVITE that parses is refused, never relayed
ATTACKER_MESSAGES, CUSTOMER_MESSAGES = 2400, 600
TCP_SHARE = 0.15
PACE_PER_S = 150  # sending rate: the whole run sends for about 20 s
CALLS_PER_PHASE = 20


# ------------------------------------------------------------------ valid requests to mutate

def base_request(method: str, source: str, port: int, rng: random.Random, transport: str = "UDP") -> bytes:
    """A valid request of ``method`` from ``source``, with fresh Call-ID, tags and branch."""
    cid, tag, branch = f"fz-{rng.getrandbits(64):016x}", f"{rng.getrandbits(32):08x}", f"z9hG4bK{rng.getrandbits(48):x}"
    in_dialog = method in ("BYE", "ACK")
    cseq = {"ACK": "1 ACK", "CANCEL": "1 CANCEL", "BYE": "2 BYE"}.get(method, f"1 {method}")
    ruri = f"sip:{NODE}" if method in ("OPTIONS", "REGISTER") else f"sip:{UNSOLD}@{NODE}"
    body = ""
    if method == "INVITE":
        body = (f"v=0\r\no=fuzz 1 1 IN IP4 {source}\r\ns=-\r\nc=IN IP4 {source}\r\nt=0 0\r\n"
                "m=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n")
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/{transport} {source}:{port};branch={branch};rport",
        "Max-Forwards: 70",
        f'From: "Fuzz" <sip:{CALLER}@{source}>;tag={tag}',
        f"To: <sip:{UNSOLD}@{NODE}>" + (f";tag={rng.getrandbits(32):08x}" if in_dialog else ""),
        f"Call-ID: {cid}",
        f"CSeq: {cseq}",
        f"Contact: <sip:{CALLER}@{source}:{port}>",
        "User-Agent: fuzz",
    ]
    if method == "REGISTER":
        lines.append("Expires: 60")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


# ------------------------------------------------------------------ mutations

def _headers(data: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


def _join(lines: list[bytes], body: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        if out:
            out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def _line(lines: list[bytes], rng: random.Random) -> int:
    """A header line's index (the request line's when there is nothing else left)."""
    return rng.randrange(1, len(lines)) if len(lines) > 1 else 0


def duplicate_header(data: bytes, rng: random.Random) -> bytes:
    lines, body = _headers(data)
    i = _line(lines, rng)
    return _join(lines[:i] + [lines[i]] * rng.randint(2, 40) + lines[i:], body)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(1, len(data))] if len(data) > 1 else data + b"\r\n"


def drop_header(data: bytes, rng: random.Random) -> bytes:
    lines, body = _headers(data)
    del lines[_line(lines, rng)]
    return _join(lines, body) if lines else b"\r\n"


def huge_field(data: bytes, rng: random.Random) -> bytes:
    size = rng.choice((300, 4_000, 20_000, 50_000))
    lines, body = _headers(data)
    where = rng.choice(("user", "header", "callid", "display"))
    if where == "user":
        lines[0] = lines[0].replace(UNSOLD.encode(), b"9" * size, 1)
    elif where == "callid":
        lines = [line + b"x" * size if line.startswith(b"Call-ID:") else line for line in lines]
    elif where == "display":
        lines = [line.replace(b'"Fuzz"', b'"' + b"D" * size + b'"') for line in lines]
    else:
        lines.insert(_line(lines, rng) + 1, b"X-Huge: " + b"A" * size)
    return _join(lines, body)


def insert_nul(data: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.5 and b"Call-ID: " in data:  # where it hurts most: the CDR key
        return data.replace(b"Call-ID: ", b"Call-ID: \x00", 1)
    at = rng.randrange(len(data) + 1)
    return data[:at] + b"\x00" * rng.randint(1, 4) + data[at:]


def invalid_utf8(data: bytes, rng: random.Random) -> bytes:
    junk = rng.choice((b"\xff\xfe", b"\xc3(", b"\xed\xa0\x80", b"\x80\x80\x80", b"\xf8\x88\x80\x80\x80"))
    target = rng.choice((b"Call-ID: ", b'"Fuzz', b"sip:" + CALLER.encode(), b"sip:" + UNSOLD.encode(), b"User-Agent: "))
    return data.replace(target, target + junk, 1) if target in data else data + junk


def bad_content_length(data: bytes, rng: random.Random) -> bytes:
    value = rng.choice((b"-1", b"-999", b"99999", b"abc", b"18446744073709551616", b"4294967296", b"", b"1 2",
                        b"0x10", b"+5"))
    lines, body = _headers(data)
    lines = [b"Content-Length: " + value if line.startswith(b"Content-Length:") else line for line in lines]
    if rng.random() < 0.3:
        lines.insert(1, b"l: " + str(rng.randint(0, 500)).encode())  # a second, conflicting one
    return _join(lines, body)


def crlf_games(data: bytes, rng: random.Random) -> bytes:
    game = rng.randrange(6)
    if game == 0:
        return data.replace(b"\r\n", b"\n")
    if game == 1:
        return data.replace(b"\r\n", b"\r")
    if game == 2:
        return b"\r\n" * rng.randint(1, 50) + data
    if game == 3:  # a blank line early: the rest of the headers becomes the body
        lines, body = _headers(data)
        i = _line(lines, rng) + 1
        return _join(lines[:i] + [b""] + lines[i:], body)
    if game == 4:  # fold every header onto continuation lines
        return data.replace(b": ", b":\r\n \t ")
    return data + b"\r\n\r\n" + b"trailing garbage " * rng.randint(1, 100)


def deep_via(data: bytes, rng: random.Random) -> bytes:
    # the top Via's port is where the answer goes: the fuzzer's, not the customer switch's 5060
    vias = [b"Via: SIP/2.0/UDP 10.%d.%d.%d:%d;branch=z9hG4bK%d" % (i % 250, i % 7, i % 3, FUZZ_PORT, i)
            for i in range(rng.choice((40, 200, 1000)))]
    lines, body = _headers(data)
    return _join([lines[0], *vias, *lines[1:]], body)


MUTATIONS: tuple[Callable[[bytes, random.Random], bytes], ...] = (
    flip_bytes, duplicate_header, truncate, drop_header, huge_field, insert_nul, invalid_utf8,
    bad_content_length, crlf_games, deep_via)


def mutate(data: bytes, rng: random.Random) -> bytes:
    for mutation in rng.sample(MUTATIONS, rng.randint(1, 3)):
        data = mutation(data, rng)
    return data[:65_000]  # one UDP datagram


# ------------------------------------------------------------------ the attacker's sockets

@dataclass
class Fuzzer:
    """One address's raw UDP socket and TCP connections; a thread collects every reply."""

    address: str
    udp: socket.socket = field(init=False)
    tcp: list[socket.socket] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    _selector: selectors.DefaultSelector = field(default_factory=selectors.DefaultSelector)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((self.address, FUZZ_PORT))
        self._selector.register(self.udp, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                events = self._selector.select(timeout=0.05) if self._selector.get_map() else []
            for key, _ in events:
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(65_535)
                except OSError:
                    data = b""
                if data:
                    self.received.append(data)
                elif sock is not self.udp:  # closed by the node: the next send drops it
                    with self._lock, contextlib.suppress(KeyError, ValueError):
                        self._selector.unregister(sock)

    def send_udp(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # a datagram the kernel refuses never reached the node
            self.udp.sendto(data, (NODE, 5060))

    def send_tcp(self, data: bytes, rng: random.Random) -> None:
        """On one of a few connections (a new one now and then, and when the node closed one:
        framing errors do); over UDP when no connection can be had."""
        if len(self.tcp) < 3 or rng.random() < 0.05:
            try:
                sock = socket.create_connection((NODE, 5060), timeout=2, source_address=(self.address, 0))
            except OSError:
                self.send_udp(data)
                return
            with self._lock:
                self._selector.register(sock, selectors.EVENT_READ)
            self.tcp.append(sock)
        sock = rng.choice(self.tcp[-3:])
        try:
            sock.sendall(data)
        except OSError:
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock, contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        self.tcp.remove(sock)
        sock.close()

    def codes(self) -> list[int]:
        return [int(m.group(1)) for chunk in list(self.received)
                for m in re.finditer(rb"(?:^|\r\n)SIP/2\.0 (\d{3}) ", chunk)]

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for sock in [self.udp, *self.tcp]:
            sock.close()
        self._selector.close()


@pytest.fixture(scope="module")
def node(module_db: psycopg.Connection, clean_redis: redis.Redis, e2e_env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    provision.reset(module_db)
    plan = provision.plan(module_db, "fuzz", [provision.vendor(module_db, "fuzz-v", VENDOR, {DIALED: "0.0050"})])
    provision.customer(module_db, "FUZZ-1", f"{CUSTOMER}/32", plan)
    workdir = tmp_path_factory.mktemp("fuzz")
    with kamailio_node(e2e_env, NODE, workdir, extra_env={
            "WARP_METRICS__LISTEN": METRICS,
            "WARP_METRICS__KAMAILIO_CTL": f"unix:{workdir / 'run' / 'kamailio_ctl'}",
            "WARP_NODE__NAME": "fuzz-node"}) as n:
        yield n


def call_id_of_message(message: str) -> str:
    found = re.search(r"^Call-ID: (\S+)", message, re.M | re.I)
    return found.group(1) if found else ""


def metrics_up() -> bool:
    try:
        kemi_errors()
    except OSError:
        return False
    return True


def kemi_errors() -> float:
    with urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(r"^warp_kemi_errors_total(?:\{[^}]*\})? (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def paced(count: int) -> Iterator[int]:
    start = time.monotonic()
    for i in range(count):
        ahead = start + i / PACE_PER_S - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)  # pacing the sender, not waiting for an outcome
        yield i


def fuzz(fuzzer: Fuzzer, rng: random.Random, count: int, methods: tuple[str, ...], tcp_share: float) -> None:
    for _ in paced(count):
        over_tcp = rng.random() < tcp_share
        data = mutate(base_request(rng.choice(methods), fuzzer.address, FUZZ_PORT, rng,
                                   "TCP" if over_tcp else "UDP"), rng)
        if over_tcp:
            fuzzer.send_tcp(data, rng)
        else:
            fuzzer.send_udp(data)


def test_the_mutations_are_seeded_and_cover_every_kind() -> None:
    one, two = random.Random(SEED), random.Random(SEED)
    a = [mutate(base_request("INVITE", ATTACKER, FUZZ_PORT, one), one) for _ in range(50)]
    b = [mutate(base_request("INVITE", ATTACKER, FUZZ_PORT, two), two) for _ in range(50)]
    assert a == b  # the same seed replays the same messages
    rng = random.Random(SEED)
    valid = base_request("INVITE", ATTACKER, FUZZ_PORT, rng)
    for mutation in MUTATIONS:
        assert mutation(valid, rng) != valid, mutation.__name__


def test_fuzzed_sip_never_gets_a_500_and_leaves_the_node_calls_and_cdrs_working(
        node: Node, tmp_path: Path, module_db: psycopg.Connection) -> None:
    print(f"fuzz seed {SEED}: {ATTACKER_MESSAGES} attacker + {CUSTOMER_MESSAGES} customer messages")
    rng = random.Random(SEED)
    workers = group_pids(node.kamailio.pid)  # type: ignore[union-attr]
    wait_for(metrics_up, 30, "the metrics endpoint")
    assert kemi_errors() == 0
    attacker, customer = Fuzzer(ATTACKER), Fuzzer(CUSTOMER)
    try:
        with vendor("vendor_answer.xml", VENDOR, tmp_path, calls=2 * CALLS_PER_PHASE + 1) as gw:
            started = time.monotonic()
            calls = sipp("customer_call.xml", CUSTOMER, tmp_path, remote=node.target, service=DIALED,
                         keys={"caller": CALLER}, calls=CALLS_PER_PHASE, hold_ms=100, extra=["-r", "2"])
            fuzz(attacker, rng, ATTACKER_MESSAGES, ("INVITE", "OPTIONS", "REGISTER", "BYE", "ACK", "CANCEL"),
                 TCP_SHARE)
            assert calls.wait(timeout_s=60) == 0, calls.report()  # every valid call of phase 1 completed
            calls = sipp("customer_call.xml", CUSTOMER, tmp_path, remote=node.target, service=DIALED,
                         keys={"caller": CALLER}, calls=CALLS_PER_PHASE, hold_ms=100, extra=["-r", "2"])
            fuzz(customer, rng, CUSTOMER_MESSAGES, ("INVITE",), 0.0)
            sending_s = time.monotonic() - started
            assert calls.wait(timeout_s=60) == 0, calls.report()  # and of phase 2
            after = sipp("customer_call.xml", CUSTOMER, tmp_path, remote=node.target, service=DIALED,
                         keys={"caller": CALLER}, hold_ms=100)
            assert after.wait() == 0, after.report()
            # every call reached the vendor (its own verdict is not asked: through a multi-worker
            # proxy a BYE may overtake the ACK, which vendor_answer.xml counts as a failure)
            assert len({call_id_of_message(m) for m in gw.received("INVITE")}) == 2 * CALLS_PER_PHASE + 1
    finally:
        attacker.close()
        customer.close()
    seen = {name: sorted(set(f.codes())) for name, f in (("attacker", attacker), ("customer", customer))}
    print(f"sent for {sending_s:.1f}s; answers: attacker {len(attacker.codes())} {seen['attacker']}, "
          f"customer {len(customer.codes())} {seen['customer']}")
    assert 500 not in attacker.codes() and 500 not in customer.codes(), seen
    assert {401, 407} & set(attacker.codes()), "the attacker was never challenged (an unknown source must be)"
    assert customer.codes(), "the customer's fuzzed INVITEs got no answer at all"
    assert sending_s < 60
    # Kamailio alive: the same processes, answering OPTIONS
    assert node.kamailio.poll() is None  # type: ignore[union-attr]
    assert options_ping(NODE, 5060, timeout_s=3) == 200
    # every process there before is still there (Kamailio replaces no worker: one that dies takes
    # the node down); late-forked helpers may have joined since the node first answered
    assert workers <= group_pids(node.kamailio.pid), "a worker died"  # type: ignore[union-attr]
    # no Python exception escaped or was caught in a callback
    assert node.log_path.exists()
    log = node.log_text()
    assert "Traceback" not in log and "unhandled" not in log, log[-3000:]
    assert kemi_errors() == 0
    # the CDR stream is not stuck: the call made after the fuzzing gets its CDR (one CDR that
    # Postgres refuses, a NUL in a Call-ID say, must not hold back the ones after it)
    companion_log = node.log_path.parent / "cdr-emitter.log"
    try:
        row = cdr(module_db, call_id_of(after), timeout_s=30)
    except AssertionError as stuck:
        tail = companion_log.read_text(errors="replace")[-1500:] if companion_log.exists() else "(no log)"
        raise AssertionError(f"{stuck}; the companion says:\n{tail}") from None
    assert row["sip_code"] == 200
