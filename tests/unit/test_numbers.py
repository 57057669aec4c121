import pytest

from routing_engine.domain.numbers import NumberError, normalise


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("+12125551234", "+12125551234"),
        ("12125551234", "+12125551234"),
        ("2125551234", "+12125551234"),
        ("(212) 555-1234", "+12125551234"),
        ("011442079460000", "+442079460000"),
        ("00442079460000", "+442079460000"),
        ("+442079460000", "+442079460000"),
        ("18005550199", "+18005550199"),
        ("442079460000", "+442079460000"),  # E.164 digits without '+', as switches send them
        ("81312345678", "+81312345678"),
    ],
)
def test_dialed_numbers_in_common_switch_formats_become_e164(raw: str, expected: str) -> None:
    assert str(normalise(raw, "US")) == expected


def test_national_number_is_read_in_the_default_region() -> None:
    assert str(normalise("02079460000", "GB")) == "+442079460000"


@pytest.mark.parametrize("raw", ["", "abc", "12", "+", "1212555123456789012", "12a5551234", "*67"])
def test_unroutable_input_is_refused_not_guessed(raw: str) -> None:
    with pytest.raises(NumberError):
        normalise(raw, "US")


def test_e164_carries_country_and_nanp_flag() -> None:
    us = normalise("+12125551234")
    uk = normalise("+442079460000")
    assert (us.digits, us.country_code, us.is_nanp) == ("12125551234", 1, True)
    assert (uk.country_code, uk.region, uk.is_nanp) == (44, "GB", False)
