"""Translation: how numbers are written towards a vendor, and what a trunk's dialing means.

Vendor side, after the vendor is chosen: the number format (E.164 digits, +E.164, national),
then ``strip_digits`` removed from the front, ``add_prefix`` put in front, the vendor's
``tech_prefix`` in front of all, and — if the vendor asks for it — the LRN as RFC 4694
parameters: ``;rn=<LRN>`` when ported and ``;npdi`` whenever the dip was made.

Trunk side, before the number is read: ``strip_digits`` then ``add_prefix`` on the dialed
digits, e.g. a customer that sends a leading '9' or omits the country code.
"""

from __future__ import annotations

from routing_engine.domain.lrn import LrnResult
from routing_engine.domain.numbers import E164, national
from routing_engine.domain.snapshot import NumberFormat, Translation, Trunk


def _format(digits: str, fmt: NumberFormat) -> str:
    if fmt is NumberFormat.E164_PLUS:
        return "+" + digits
    if fmt is NumberFormat.NATIONAL:
        return national(E164(digits=digits, country_code=0, region=None))
    return digits


def _shape(text: str, t: Translation) -> str:
    stripped = text[t.strip_digits :] if t.strip_digits else text
    return t.add_prefix + stripped


def dialed_for_vendor(number: E164, lrn: LrnResult, t: Translation) -> str:
    """The Request-URI user part for this vendor."""
    user = t.tech_prefix + _shape(_format(number.digits, t.number_format), t)
    if t.send_lrn and lrn.dipped:
        if lrn.lrn:
            user += ";rn=" + _format(lrn.lrn, t.number_format)
        user += ";npdi"
    return user


def caller_for_vendor(caller: E164 | None, t: Translation) -> str | None:
    """The From user part for this vendor, or None to leave From as the customer sent it."""
    if not t.translate_caller or caller is None:
        return None
    return _shape(_format(caller.digits, t.number_format), t)


def dialed_from_trunk(raw: str, trunk: Trunk) -> str:
    """What the customer dialed, after the trunk's own rules."""
    text = raw[trunk.strip_digits :] if trunk.strip_digits else raw
    return trunk.add_prefix + text
