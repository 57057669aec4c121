"""Credentials: digest HA1 values, the only form in which trunk passwords are kept."""

from __future__ import annotations

import hashlib


def ha1_md5(username: str, realm: str, password: str) -> str:
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).hexdigest()  # noqa: S324 - RFC 2617


def ha1_sha256(username: str, realm: str, password: str) -> str:
    return hashlib.sha256(f"{username}:{realm}:{password}".encode()).hexdigest()
