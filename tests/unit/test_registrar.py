import pytest

from routing_engine.domain.registrar import ContactSpec, RegisterError, parse_contacts, plan, split_header_values

LIMITS = {"minimum": 60, "maximum": 3600, "default": 3600}


def test_contact_forms_are_read() -> None:
    assert parse_contacts(['"Trunk, A" <sip:a@10.0.0.1:5060;transport=udp>;expires=120',
                           "sip:b@10.0.0.2;q=0.5, <sip:c@10.0.0.3>"]) == [
        ContactSpec("sip:a@10.0.0.1:5060;transport=udp", 120),
        ContactSpec("sip:b@10.0.0.2", None),
        ContactSpec("sip:c@10.0.0.3", None),
    ]


def test_wildcard_stands_alone() -> None:
    assert parse_contacts(["*"]) == "*"
    with pytest.raises(RegisterError):
        parse_contacts(["*", "sip:a@h"])


@pytest.mark.parametrize("bad", ["<http://x>", "nonsense", "<sip:a@h"])
def test_bad_contacts_get_400(bad: str) -> None:
    with pytest.raises(RegisterError) as err:
        parse_contacts([bad])
    assert err.value.code == 400


def test_expiry_comes_from_the_contact_then_the_header_then_the_default() -> None:
    contacts = [ContactSpec("sip:a@h", 120), ContactSpec("sip:b@h", None)]
    assert plan(contacts, 600, **LIMITS).add == (("sip:a@h", 120), ("sip:b@h", 600))
    assert plan([ContactSpec("sip:b@h", None)], None, **LIMITS).add == (("sip:b@h", 3600),)


def test_too_long_is_cut_and_too_short_is_refused_with_min_expires() -> None:
    assert plan([ContactSpec("sip:a@h", 86400)], None, **LIMITS).add == (("sip:a@h", 3600),)
    with pytest.raises(RegisterError) as err:
        plan([ContactSpec("sip:a@h", 10)], None, **LIMITS)
    assert (err.value.code, err.value.min_expires) == (423, 60)


def test_zero_removes_and_wildcard_needs_expires_zero() -> None:
    assert plan([ContactSpec("sip:a@h", None)], 0, **LIMITS).remove == ("sip:a@h",)
    assert plan("*", 0, **LIMITS).remove_all
    with pytest.raises(RegisterError):
        plan("*", 3600, **LIMITS)


def test_commas_inside_quotes_and_brackets_do_not_split() -> None:
    assert split_header_values(['"a, b" <sip:x@h;p=1,2>, sip:y@h']) == ['"a, b" <sip:x@h;p=1,2>', "sip:y@h"]
