from routing_engine.domain.jurisdiction import classify
from routing_engine.domain.numbers import normalise
from routing_engine.domain.snapshot import Jurisdiction, Location

NPANXX = {
    "212555": Location("US", "NY", "132", "OCN1", "NWYRCYZN01"),
    "212556": Location("US", "NY", "132", "OCN2", "NWYRCYZN01"),
    "518555": Location("US", "NY", "134", "OCN3", "ALBANY"),
    "305555": Location("US", "FL", "460", "OCN4", "MIAMI"),
    "416555": Location("CA", "ON", None, "OCN5", "TORONTO"),
}


def kind(dialed: str, caller: str | None, lrn: str | None = None) -> Jurisdiction:
    d = normalise(dialed)
    c = normalise(caller) if caller else None
    return classify(d, c, lrn or d.digits, NPANXX).kind


def test_different_states_are_interstate() -> None:
    assert kind("12125551234", "13055550100") is Jurisdiction.INTERSTATE


def test_same_state_different_rate_centre_is_intrastate() -> None:
    assert kind("12125551234", "15185550100") is Jurisdiction.INTRASTATE


def test_same_rate_centre_is_local() -> None:
    assert kind("12125551234", "12125560100") is Jurisdiction.LOCAL


def test_us_to_canada_is_interstate() -> None:
    assert kind("14165551234", "12125550100") is Jurisdiction.INTERSTATE


def test_ported_number_is_classified_where_its_lrn_is_homed() -> None:
    # dialed looks like New York, but the number now lives on a Miami switch
    assert kind("12125551234", "13055550100", lrn="13055559999") is Jurisdiction.LOCAL
    assert kind("12125551234", "12125560100", lrn="13055559999") is Jurisdiction.INTERSTATE


def test_missing_foreign_or_toll_free_caller_is_indeterminate() -> None:
    assert kind("12125551234", None) is Jurisdiction.INDETERMINATE
    assert kind("12125551234", "+442079460000") is Jurisdiction.INDETERMINATE
    assert kind("12125551234", "18005550100") is Jurisdiction.INDETERMINATE


def test_unknown_npanxx_is_indeterminate_and_says_which() -> None:
    result = classify(normalise("12125551234"), normalise("17025550100"), "12125551234", NPANXX)
    assert result.kind is Jurisdiction.INDETERMINATE and "702555" in result.why


def test_toll_free_and_international_destinations() -> None:
    assert kind("18885551234", "12125550100") is Jurisdiction.TOLL_FREE
    assert kind("442079460000", "12125550100") is Jurisdiction.INTERNATIONAL
