"""End-to-end harness: a real Kamailio node with the CDR emitter, SIPp peers, raw SIP sockets.

Every process started here is stopped by its context manager, also when a test fails.
Nothing sleeps for a fixed time: readiness and outcomes are awaited with deadlines.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routing_engine.adapters import sipcheck
from routing_engine.ops import stack
from routing_engine.settings import PROJECT_ROOT, load_settings

SCENARIOS = PROJECT_ROOT / "sipp-scenarios"
SIPP = "/usr/bin/sipp"


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def udp_bound(ip: str, port: int) -> bool:
    """Is some socket bound to ip:port/udp? (reads /proc, no traffic)"""
    want = f"{socket.htonl(int.from_bytes(socket.inet_aton(ip), 'big')):08X}:{port:04X}"
    with open("/proc/net/udp") as fh:
        return any(line.split()[1] == want for line in fh.readlines()[1:])


_stop_group = stack.stop_group


# ------------------------------------------------------------------ Kamailio node

@dataclass
class Node:
    address: str
    port: int
    env: dict[str, str]
    log_path: Path
    kamailio: subprocess.Popen[bytes] | None = None
    emitter: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"{self.address}:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def kamailio_node(base_env: dict[str, str], address: str, workdir: Path, port: int = 5060,
                  extra_env: dict[str, str] | None = None) -> Iterator[Node]:
    env = {
        **base_env,
        "WARP_SIP__LISTEN": f"udp:{address}:{port},tcp:{address}:{port}",
        "WARP_SIP__CHILDREN": "2",
        "WARP_SIP__TCP_CHILDREN": "2",
        "WARP_KAMAILIO__SHM_MB": "64",
        "WARP_CDR__BATCH_SECONDS": "0.1",
        **(extra_env or {}),
    }
    settings = load_settings(environ=env)
    workdir.mkdir(parents=True, exist_ok=True)
    node = Node(address, port, env, workdir / "kamailio.log")
    run_dir = workdir / "run"
    full_env = stack.kamailio_env(settings, env)
    try:
        with open(workdir / "cdr-emitter.log", "ab") as emitter_log:
            node.emitter = subprocess.Popen(
                [sys.executable, "-m", "routing_engine.entrypoints.cli", "cdr-emitter"], env=full_env,
                stdout=emitter_log, stderr=subprocess.STDOUT, start_new_session=True)
        with open(node.log_path, "ab") as kam_log:
            node.kamailio = subprocess.Popen(
                stack.kamailio_command(settings, run_dir), env=full_env, stdout=kam_log,
                stderr=subprocess.STDOUT, start_new_session=True)
        kam = node.kamailio
        if not sipcheck.wait_until_answering(address, port, 30, is_alive=lambda: kam.poll() is None):
            raise AssertionError(f"Kamailio did not come up:\n{node.log_text()[-4000:]}")
        yield node
    finally:
        for proc in (node.kamailio, node.emitter):
            if proc is not None:
                _stop_group(proc)
        print(f"--- kamailio log tail ({node.log_path}) ---\n{node.log_text()[-6000:]}")


# ------------------------------------------------------------------ SIPp

@dataclass
class Sipp:
    proc: subprocess.Popen[bytes]
    messages: Path
    errors: Path
    stdout: Path

    def wait(self, timeout_s: float = 20) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop_group(self.proc)
            raise AssertionError(f"SIPp did not finish in {timeout_s}s:\n{self.report()}") from None

    def trace(self) -> str:
        return self.messages.read_text(errors="replace") if self.messages.exists() else ""

    def received(self, method_or_code: str) -> list[str]:
        """Messages SIPp received whose first line starts with a method or 'SIP/2.0 <code>'."""
        out = []
        for match in re.finditer(r"message received \[\d+\] bytes :\n\n(.*?)(?=\n-{10,}|\Z)",
                                 self.trace(), re.S):
            text = match.group(1).lstrip()
            first = text.split("\n", 1)[0]
            if first.startswith(method_or_code) or first.startswith(f"SIP/2.0 {method_or_code}"):
                out.append(text)
        return out

    def report(self) -> str:
        parts = []
        for path in (self.stdout, self.errors):
            if path.exists():
                parts.append(path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)


def sipp(scenario: str | Path, local_ip: str, workdir: Path, *, local_port: int = 5060,
         remote: str | None = None, calls: int | None = 1, keys: dict[str, str] | None = None,
         service: str | None = None, hold_ms: int = 200, transport: str = "u1",
         extra: list[str] | None = None) -> Sipp:
    """Start SIPp (UAC when ``remote`` is given, else UAS) in its own process group."""
    name = f"{Path(scenario).stem}-{local_ip}-{secrets.token_hex(3)}"
    workdir.mkdir(parents=True, exist_ok=True)
    files = Sipp(None, workdir / f"{name}.msg", workdir / f"{name}.err", workdir / f"{name}.out")  # type: ignore[arg-type]
    path = Path(scenario)
    if not path.is_absolute():
        path = SCENARIOS / path
    cmd = [SIPP, "-sf", str(path), "-i", local_ip, "-p", str(local_port), *(["-m", str(calls)] if calls else []),
           "-t", transport, "-nostdin", "-trace_msg", "-message_file", str(files.messages),
           "-trace_err", "-error_file", str(files.errors), "-d", str(hold_ms),
           "-timeout", "30s", "-timeout_error", "-cid_str", f"{name}-%u@%s"]
    if service:
        cmd += ["-s", service]
    for key, value in (keys or {}).items():
        cmd += ["-key", key, value]
    cmd += extra or []
    if remote:
        cmd.append(remote)
    with open(files.stdout, "wb") as out:
        files.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True, cwd=workdir)
    return files


@contextlib.contextmanager
def vendor(scenario: str, ip: str, workdir: Path, calls: int = 1, port: int = 5060,
           keys: dict[str, str] | None = None, extra: list[str] | None = None) -> Iterator[Sipp]:
    """A SIPp vendor gateway, bound and ready when the block starts, stopped when it ends."""
    path: str | Path = scenario
    if scenario == "vendor_reject.xml":
        code = (keys or {}).get("reject_code", "503")
        reason = (keys or {}).get("reject_reason", "Service Unavailable")
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / f"vendor_reject_{code}.xml"
        path.write_text((SCENARIOS / scenario).read_text().replace("REJECT_CODE", code)
                        .replace("REJECT_REASON", reason))
        keys = None
    uas = sipp(path, ip, workdir, local_port=port, calls=calls, keys=keys, extra=extra)
    try:
        wait_for(lambda: udp_bound(ip, port) or uas.proc.poll() is not None, 10, f"SIPp on {ip}:{port}")
        if uas.proc.poll() is not None:
            raise AssertionError(f"vendor SIPp on {ip}:{port} exited:\n{uas.report()}")
        yield uas
    finally:
        _stop_group(uas.proc)


def explain(env: dict[str, str], *args: str) -> dict[str, Any]:
    """`warp route explain --json` with the given arguments, as the node's settings see it."""
    import json

    result = subprocess.run([sys.executable, "-m", "routing_engine.entrypoints.cli", "route", "explain", "--json",
                             *args], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def request_uri(message: str) -> str:
    return message.split("\n", 1)[0].split()[1]


def cdr(db: Any, call_id: str, timeout_s: float = 15) -> dict[str, object]:
    """The CDR of a call, once the companion has written it (exactly one is expected)."""
    def fetch() -> dict[str, object] | None:
        cur = db.execute("SELECT * FROM cdr.cdrs WHERE call_id = %s", (call_id,))
        rows = cur.fetchall()
        if not rows:
            return None
        assert len(rows) == 1, f"{len(rows)} CDRs for {call_id}"
        return dict(zip([c.name for c in cur.description], rows[0], strict=True))

    return wait_for(fetch, timeout_s, f"the CDR of {call_id}")  # type: ignore[no-any-return]


def call_id_of(uac: Sipp) -> str:
    match = re.search(r"^Call-ID: (\S+)", uac.trace(), re.M)
    assert match, f"no Call-ID in the UAC trace:\n{uac.report()}"
    return match.group(1)


def scenario_expecting(code: int, workdir: Path) -> Path:
    """customer_refused.xml with the expected final response code filled in."""
    path = workdir / f"customer_refused_{code}.xml"
    path.write_text((SCENARIOS / "customer_refused.xml").read_text().replace("EXPECTED_CODE", str(code)))
    return path


# ------------------------------------------------------------------ raw SIP over UDP

@dataclass
class RawUA:
    """A bare UDP SIP endpoint for checks SIPp cannot express (counting retransmissions)."""

    ip: str
    port: int = 5060
    sock: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.ip, self.port))

    def send(self, text: str, to: tuple[str, int]) -> None:
        self.sock.sendto(text.replace("\n", "\r\n").encode(), to)

    def recv(self, timeout_s: float = 5) -> tuple[str, tuple[str, int]]:
        self.sock.settimeout(timeout_s)
        data, addr = self.sock.recvfrom(65535)
        return data.decode(errors="replace"), addr

    def recv_until(self, predicate: Callable[[str], bool],
                   timeout_s: float = 5) -> tuple[str, tuple[str, int]]:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            text, addr = self.recv(left)
            if predicate(text):
                return text, addr
        raise AssertionError("expected SIP message did not arrive")

    def drain(self, quiet_s: float = 0.3) -> list[str]:
        """Everything that arrives until nothing more comes for ``quiet_s``."""
        got = []
        with contextlib.suppress(TimeoutError):
            while True:
                got.append(self.recv(quiet_s)[0])
        return got

    def close(self) -> None:
        self.sock.close()


def header(message: str, name: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in message.splitlines()
            if line.lower().startswith(name.lower() + ":")]


def reply_to(request: str, code: int, reason: str, to_tag: str | None = None) -> str:
    lines = request.split("\r\n")
    keep = [line for line in lines if line.lower().startswith(("via:", "from:", "call-id:", "cseq:",
                                                               "record-route:"))]
    to = next(line for line in lines if line.lower().startswith("to:"))
    if to_tag and ";tag=" not in to:
        to += f";tag={to_tag}"
    return "\n".join([f"SIP/2.0 {code} {reason}", *keep, to, "Content-Length: 0", "", ""])


# ------------------------------------------------------------------ rtpengine and media

@dataclass
class Rtpengine:
    """A real rtpengine on its own address; ``env`` points a Kamailio node's settings at it."""

    env: dict[str, str]
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def settings(self) -> Any:
        return load_settings(environ=self.env)

    @property
    def log_path(self) -> Path:
        return self.workdir / "rtpengine.log"

    def client(self) -> Any:
        from routing_engine.adapters.rtpengine_ng import NgClient

        return NgClient(self.settings.media.ng_address, timeout_s=1, retries=1)

    def start(self) -> None:
        self.proc = stack.start_rtpengine(self.settings, self.workdir / "run", self.log_path)

    def stop(self) -> None:
        if self.proc is not None:
            stack.stop_group(self.proc)
            self.proc = None

    def calls(self) -> list[str]:
        client = self.client()
        try:
            return client.list_calls()  # type: ignore[no-any-return]
        finally:
            client.close()


@contextlib.contextmanager
def rtpengine(base_env: dict[str, str], interface: str, workdir: Path, ng_port: int = 2223,
              port_min: int = 40000, port_max: int = 40999) -> Iterator[Rtpengine]:
    """Start rtpengine (userspace) on ``interface``; always stopped when the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**base_env, "WARP_MEDIA__ENABLED": "true", "WARP_MEDIA__MANAGED": "true",
           "WARP_MEDIA__INTERFACE": interface, "WARP_MEDIA__NG_ADDRESS": f"{interface}:{ng_port}",
           "WARP_MEDIA__PORT_MIN": str(port_min), "WARP_MEDIA__PORT_MAX": str(port_max),
           # after rtpengine fails, Kamailio tries it again within a second (tests restart it)
           "WARP_MEDIA__DISABLE_S": "1"}
    relay = Rtpengine(env, workdir)
    try:
        relay.start()
        yield relay
    finally:
        relay.stop()
        print(f"--- rtpengine log tail ({relay.log_path}) ---\n"
              f"{relay.log_path.read_text(errors='replace')[-3000:] if relay.log_path.exists() else ''}")


class MediaSink:
    """A UDP socket where a vendor's SDP says its RTP goes: counts packets and who sent them."""

    def __init__(self, ip: str, port: int) -> None:
        import threading

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, port))
        self.sock.settimeout(0.1)
        self.sources: dict[tuple[str, int], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                _, addr = self.sock.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            self.sources[addr] = self.sources.get(addr, 0) + 1

    @property
    def packets(self) -> int:
        return sum(self.sources.values())

    def source_ips(self) -> set[str]:
        return {ip for ip, _ in self.sources}

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def sdp_media(message: str) -> tuple[str, int, list[str]]:
    """(c= address, m=audio port, payload types) of the SDP in a SIP message."""
    address = re.search(r"^c=IN IP[46] (\S+)", message, re.M)
    audio = re.search(r"^m=audio (\d+) \S+((?: \d+)*)", message, re.M)
    assert address and audio, f"no SDP audio in:\n{message}"
    return address.group(1), int(audio.group(1)), audio.group(2).split()
