"""Registrar: what a REGISTER asks for, within the limits we set.

Pure: Contact header values and the request's Expires in, a plan of bindings to add and remove
out. Rules (RFC 3261 section 10.3, with carrier limits):

- a contact's expiry is its ``expires`` parameter, else the Expires header, else the default;
- a non-zero expiry below the minimum is refused with 423 Interval Too Brief (Min-Expires);
  one above the maximum is cut to the maximum;
- expiry 0 removes that contact; ``Contact: *`` with ``Expires: 0`` removes them all;
- a REGISTER without Contact is a query: it changes nothing and is answered with the list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PARAM_EXPIRES = re.compile(r";\s*expires\s*=\s*(\d+)", re.I)


class RegisterError(ValueError):
    def __init__(self, code: int, reason: str, min_expires: int | None = None) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.min_expires = min_expires


@dataclass(frozen=True, slots=True)
class ContactSpec:
    uri: str
    expires: int | None  # the contact's own expires parameter


@dataclass(frozen=True, slots=True)
class Plan:
    add: tuple[tuple[str, int], ...] = ()   # (contact URI, seconds)
    remove: tuple[str, ...] = ()
    remove_all: bool = False


def split_header_values(values: list[str]) -> list[str]:
    """Split comma-separated header values, respecting quotes and <...>."""
    out: list[str] = []
    for value in values:
        depth, quoted, start = 0, False, 0
        for i, ch in enumerate(value):
            if ch == '"' and (i == 0 or value[i - 1] != "\\"):
                quoted = not quoted
            elif not quoted and ch == "<":
                depth += 1
            elif not quoted and ch == ">":
                depth = max(0, depth - 1)
            elif not quoted and depth == 0 and ch == ",":
                out.append(value[start:i].strip())
                start = i + 1
        out.append(value[start:].strip())
    return [v for v in out if v]


def parse_contacts(values: list[str]) -> list[ContactSpec] | str:
    """The contacts of a REGISTER, or "*" for the wildcard. Raises RegisterError(400) if bad."""
    specs: list[ContactSpec] = []
    for item in split_header_values(values):
        if item == "*":
            if len(values) != 1 or specs:
                raise RegisterError(400, "Bad Contact: '*' must stand alone")
            return "*"
        if "<" in item:
            start, end = item.find("<"), item.find(">")
            if end < start:
                raise RegisterError(400, "Bad Contact")
            uri, params = item[start + 1 : end].strip(), item[end + 1 :]
        else:
            uri, _, rest = item.partition(";")
            uri, params = uri.strip(), ";" + rest if rest else ""
        if not re.match(r"^sips?:[^\s<>]+$", uri, re.I):
            raise RegisterError(400, "Bad Contact URI")
        match = _PARAM_EXPIRES.search(params)
        specs.append(ContactSpec(uri, int(match.group(1)) if match else None))
    return specs


def plan(contacts: list[ContactSpec] | str, expires_header: int | None, *, minimum: int, maximum: int,
         default: int) -> Plan:
    if contacts == "*":
        if expires_header != 0:
            raise RegisterError(400, "Contact '*' needs Expires: 0")
        return Plan(remove_all=True)
    adds: list[tuple[str, int]] = []
    removes: list[str] = []
    for spec in contacts:
        assert not isinstance(spec, str)
        wanted = spec.expires if spec.expires is not None else expires_header
        seconds = default if wanted is None else wanted
        if seconds == 0:
            removes.append(spec.uri)
        elif seconds < minimum:
            raise RegisterError(423, "Interval Too Brief", min_expires=minimum)
        else:
            adds.append((spec.uri, min(seconds, maximum)))
    return Plan(tuple(adds), tuple(removes))
