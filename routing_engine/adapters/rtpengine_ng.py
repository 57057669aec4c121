"""A small client of rtpengine's ng control protocol: bencoded dictionaries over UDP.

Each request is ``<cookie> <bencoded dict>``; the answer repeats the cookie. Used at the end of
a call (delete, whose answer carries the call's statistics), by the tests (is rtpengine's
session list empty?) and by whatever exports metrics (statistics).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from typing import Any


class NgError(RuntimeError):
    """rtpengine did not answer in time, or answered with an error."""


# ------------------------------------------------------------------ bencode

def bencode(value: Any) -> bytes:
    if isinstance(value, bool):
        return bencode(int(value))
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list | tuple):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """Decode one bencoded value; strings come back as str (bytes when not UTF-8)."""
    value, end = _decode(data, 0)
    if end != len(data):
        raise ValueError(f"trailing data after bencoded value at {end}")
    return value


def _decode(data: bytes, i: int) -> tuple[Any, int]:
    head = data[i:i + 1]
    if head == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1:end]), end + 1
    if head == b"l":
        items, i = [], i + 1
        while data[i:i + 1] != b"e":
            item, i = _decode(data, i)
            items.append(item)
        return items, i + 1
    if head == b"d":
        out, i = {}, i + 1
        while data[i:i + 1] != b"e":
            key, i = _decode(data, i)
            out[key], i = _decode(data, i)
        return out, i + 1
    if head.isdigit():
        colon = data.index(b":", i)
        start = colon + 1
        end = start + int(data[i:colon])
        if end > len(data):
            raise ValueError("bencoded string runs past the end")
        raw = data[start:end]
        try:
            return raw.decode(), end
        except UnicodeDecodeError:
            return raw, end
    raise ValueError(f"not bencode at offset {i}: {head!r}")


# ------------------------------------------------------------------ client

class NgClient:
    """One UDP socket; a worker process opens its own (after Kamailio's fork)."""

    def __init__(self, address: str, timeout_s: float = 0.5, retries: int = 1) -> None:
        host, _, port = address.rpartition(":")
        self.target = (host.strip("[]"), int(port))
        self.timeout_s = timeout_s
        self.retries = retries
        self._sock: socket.socket | None = None
        self._pid = 0

    def _socket(self) -> socket.socket:
        if self._sock is None or self._pid != os.getpid():
            family = socket.AF_INET6 if ":" in self.target[0] else socket.AF_INET
            self._sock = socket.socket(family, socket.SOCK_DGRAM)
            self._pid = os.getpid()
        return self._sock

    def command(self, name: str, **params: Any) -> dict[str, Any]:
        """Send one command; the answer dict (``result`` is 'ok' or 'pong'), or NgError."""
        cookie = secrets.token_hex(8)
        packet = cookie.encode() + b" " + bencode({"command": name, **params})
        sock = self._socket()
        for _ in range(self.retries + 1):
            try:
                sock.sendto(packet, self.target)
            except OSError as exc:
                raise NgError(f"rtpengine at {self.target[0]}:{self.target[1]}: {exc}") from exc
            deadline = time.monotonic() + self.timeout_s
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data = sock.recv(65535)
                except TimeoutError:
                    break
                except OSError as exc:  # e.g. ICMP port unreachable: nobody listens there
                    raise NgError(f"rtpengine at {self.target[0]}:{self.target[1]}: {exc}") from exc
                got_cookie, _, body = data.partition(b" ")
                if got_cookie.decode(errors="replace") != cookie:
                    continue  # a late answer to an earlier request
                answer = bdecode(body)
                if not isinstance(answer, dict):
                    raise NgError(f"rtpengine answered {name} with {answer!r}")
                if answer.get("result") not in ("ok", "pong"):
                    raise NgError(f"rtpengine refused {name}: {answer.get('error-reason') or answer}")
                return answer
        raise NgError(f"rtpengine at {self.target[0]}:{self.target[1]} did not answer {name}")

    def ping(self) -> bool:
        try:
            return self.command("ping").get("result") == "pong"
        except NgError:
            return False

    def list_calls(self, limit: int = 1000) -> list[str]:
        return [str(c) for c in self.command("list", limit=limit).get("calls", [])]

    def statistics(self) -> dict[str, Any]:
        return self.command("statistics").get("statistics", {})  # type: ignore[no-any-return]

    def query(self, call_id: str, from_tag: str = "") -> dict[str, Any]:
        """The session's statistics; with ``from_tag``, only that leg and the legs it talks to."""
        return self.command("query", **_session(call_id, from_tag))

    def delete(self, call_id: str, from_tag: str = "") -> dict[str, Any]:
        """End a session; the answer carries its final statistics. With ``from_tag``, only the
        legs of that caller go (rtpengine keeps one session per Call-ID, and two calls may share
        a Call-ID: each caller's From tag is its own leg); without it, every leg of the Call-ID."""
        return self.command("delete", **_session(call_id, from_tag))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _session(call_id: str, from_tag: str) -> dict[str, str]:
    return {"call-id": call_id, **({"from-tag": from_tag} if from_tag else {})}
