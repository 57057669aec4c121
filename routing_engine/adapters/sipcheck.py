"""SIP check: send one OPTIONS over UDP and wait for the answer (readiness and health probes)."""

from __future__ import annotations

import secrets
import socket
import time


def options_ping(host: str, port: int, timeout_s: float = 1.0, source: str = "127.0.0.1") -> int | None:
    """The status code of the proxy's answer to OPTIONS, or None if nothing came in time."""
    tag = secrets.token_hex(6)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        if source == "0.0.0.0":
            s.connect((host, port))  # let the kernel pick the address replies can reach
            source = s.getsockname()[0]
        local_port = s.getsockname()[1]
        message = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {source}:{local_port};branch=z9hG4bK{tag};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:probe@{source}>;tag={tag}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: probe-{tag}@{source}\r\n"
            f"CSeq: 1 OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()
        s.sendto(message, (host, port))
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                data, _ = s.recvfrom(65535)
            except TimeoutError:
                return None
            first = data.split(b"\r\n", 1)[0].split()
            if len(first) >= 2 and first[0] == b"SIP/2.0" and first[1].isdigit():
                code = int(first[1])
                if code >= 200:
                    return code
    return None


def wait_until_answering(host: str, port: int, timeout_s: float, is_alive: object = None) -> bool:
    """Probe until the proxy answers 200, the deadline passes, or ``is_alive()`` turns false."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(is_alive) and not is_alive():
            return False
        if options_ping(host, port, timeout_s=0.5) == 200:
            return True
    return False
