"""Numbers: turn what a customer dialed (or sent as caller) into E.164.

Customers send every format a switch can produce: +E.164, 00/011 international prefixes,
national numbers of the trunk's region, NANP with or without the leading 1. Anything we
cannot read as a possible number is refused (484 Address Incomplete), never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

_VISUAL = re.compile(r"[\s().\-/]")
_INTERNATIONAL_PREFIXES = ("011", "00")


class NumberError(ValueError):
    """The input is not a number we can route."""


@dataclass(frozen=True, slots=True)
class E164:
    """A number in E.164 form, stored as digits without '+' (e.g. '12125551234')."""

    digits: str
    country_code: int
    region: str | None

    def __str__(self) -> str:
        return "+" + self.digits

    @property
    def is_nanp(self) -> bool:
        return self.country_code == 1


def normalise(raw: str, default_region: str = "US") -> E164:
    """Read ``raw`` as a telephone number; raise NumberError if it cannot be one."""
    text = _VISUAL.sub("", raw or "")
    if not text:
        raise NumberError("empty number")
    if text.startswith("+"):
        candidate = text
    else:
        if not text.isdigit():
            raise NumberError(f"not a telephone number: {raw!r}")
        candidate = text
        for prefix in _INTERNATIONAL_PREFIXES:
            if text.startswith(prefix) and len(text) > len(prefix) + 6:
                candidate = "+" + text[len(prefix) :]
                break
    if not candidate.lstrip("+").isdigit() or len(candidate.lstrip("+")) > 15:
        raise NumberError(f"not a telephone number: {raw!r}")
    try:
        parsed = phonenumbers.parse(candidate, default_region)
    except phonenumbers.NumberParseException as exc:
        raise NumberError(f"cannot parse {raw!r}: {exc}") from None
    if not phonenumbers.is_possible_number(parsed):
        raise NumberError(f"not a possible number: {raw!r}")
    digits = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)[1:]
    return E164(
        digits=digits,
        country_code=parsed.country_code,
        region=phonenumbers.region_code_for_number(parsed),
    )
