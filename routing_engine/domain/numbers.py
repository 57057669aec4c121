"""Numbers: turn what a customer dialed (or sent as caller) into E.164.

Customers send every format a switch can produce: +E.164, 00/011 international prefixes,
national numbers of the trunk's region, NANP with or without the leading 1. Anything we
cannot read as a possible number is refused (484 Address Incomplete), never guessed.
"""

from __future__ import annotations

import functools
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


_NANP = re.compile(r"^\+?1?([2-9]\d{2}[2-9]\d{6})$")


@functools.lru_cache(maxsize=65536)
def normalise(raw: str, default_region: str = "US") -> E164:
    """Read ``raw`` as a telephone number; raise NumberError if it cannot be one.

    Digits without a '+' are read two ways, as a national number of ``default_region`` and as
    E.164 without its '+' (what most wholesale switches send for international calls, e.g.
    '442079460000'). When both readings are possible, a valid number beats a merely possible
    one and the national reading wins a tie. Results are cached (numbers repeat: caller IDs,
    popular destinations); a value is immutable, so sharing it is safe.
    """
    text = _VISUAL.sub("", raw or "")
    if not text:
        raise NumberError("empty number")
    nanp = _NANP.match(text)
    # the common case of a US wholesale switch, read without the general parser: 10 or 11
    # NANP digits (NPA and NXX starting 2-9); a bare 10-digit string is NANP only for US/CA
    if nanp and (text.startswith(("1", "+1")) or default_region in ("US", "CA")):
        return E164(digits="1" + nanp.group(1), country_code=1, region=None)
    if text.startswith("+"):
        readings = [text]
    else:
        if not text.isdigit():
            raise NumberError(f"not a telephone number: {raw!r}")
        readings = [text, "+" + text]
        for prefix in _INTERNATIONAL_PREFIXES:
            if text.startswith(prefix) and len(text) > len(prefix) + 6:
                readings = ["+" + text[len(prefix) :]]
                break
    if any(not r.lstrip("+").isdigit() or len(r.lstrip("+")) > 15 for r in readings):
        raise NumberError(f"not a telephone number: {raw!r}")
    possible: list[phonenumbers.PhoneNumber] = []
    for reading in readings:
        try:
            parsed = phonenumbers.parse(reading, default_region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number(parsed):
            possible.append(parsed)
    if not possible:
        raise NumberError(f"not a possible number: {raw!r}")
    best = possible[0] if len(possible) == 1 else next(
        (p for p in possible if phonenumbers.is_valid_number(p)), possible[0])
    digits = phonenumbers.format_number(best, phonenumbers.PhoneNumberFormat.E164)[1:]
    country = int(best.country_code or 0)
    region = phonenumbers.region_code_for_country_code(country)
    return E164(digits=digits, country_code=country, region=None if region in ("ZZ", "001") else region)


def national(number: E164) -> str:
    """The national significant number (NANP: the 10 digits; GB: without the trunk 0)."""
    parsed = phonenumbers.parse("+" + number.digits)
    return phonenumbers.national_significant_number(parsed)
