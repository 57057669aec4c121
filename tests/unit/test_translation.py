import uuid

import pytest

from routing_engine.domain.lrn import SKIPPED, LrnResult
from routing_engine.domain.numbers import normalise
from routing_engine.domain.snapshot import NumberFormat, Translation, Trunk
from routing_engine.domain.translation import caller_for_vendor, dialed_for_vendor, dialed_from_trunk

NY = normalise("12125551234")
LONDON = normalise("+442079460000")


@pytest.mark.parametrize("t, number, expected", [
    (Translation(), NY, "12125551234"),
    (Translation(NumberFormat.E164_PLUS), NY, "+12125551234"),
    (Translation(NumberFormat.NATIONAL), NY, "2125551234"),
    (Translation(NumberFormat.NATIONAL), LONDON, "2079460000"),
    (Translation(NumberFormat.NATIONAL, add_prefix="011"), LONDON, "0112079460000"),
    (Translation(strip_digits=1), NY, "2125551234"),
    (Translation(strip_digits=2, add_prefix="00"), LONDON, "002079460000"),
    (Translation(tech_prefix="7777#"), NY, "7777#12125551234"),
])
def test_vendor_number_format(t: Translation, number, expected: str) -> None:
    assert dialed_for_vendor(number, SKIPPED, t) == expected


def test_lrn_travels_in_the_request_uri_when_the_vendor_wants_it() -> None:
    ported = LrnResult("13055559999", "local")
    not_ported = LrnResult(None, "cache")
    wants = Translation(send_lrn=True)
    assert dialed_for_vendor(NY, ported, wants) == "12125551234;rn=13055559999;npdi"
    assert dialed_for_vendor(NY, not_ported, wants) == "12125551234;npdi"
    assert dialed_for_vendor(NY, LrnResult(None, "failed", "x"), wants) == "12125551234"
    assert dialed_for_vendor(NY, ported, Translation()) == "12125551234"
    assert dialed_for_vendor(NY, ported, Translation(NumberFormat.E164_PLUS, send_lrn=True)) == \
        "+12125551234;rn=+13055559999;npdi"


def test_caller_is_rewritten_only_when_the_vendor_asks() -> None:
    caller = normalise("13055550100")
    assert caller_for_vendor(caller, Translation()) is None
    assert caller_for_vendor(caller, Translation(NumberFormat.E164_PLUS, translate_caller=True)) == "+13055550100"
    assert caller_for_vendor(None, Translation(translate_caller=True)) is None


def test_trunk_rules_apply_to_what_the_customer_dials() -> None:
    trunk = Trunk(uuid.uuid4(), uuid.uuid4(), "t", None, strip_digits=1, add_prefix="1")
    assert dialed_from_trunk("92125551234", trunk) == "12125551234"
