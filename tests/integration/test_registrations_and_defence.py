import redis

from routing_engine.adapters.registrations import Defence, RegistrationStore
from routing_engine.domain.registrar import Plan

T = 1_800_000_000.0


def test_contacts_are_stored_with_their_nat_address_and_expire(redis_client: redis.Redis) -> None:
    store = RegistrationStore(redis_client)
    store.apply("t1", Plan(add=(("sip:a@10.0.0.5:5060", 300),)), T, "sip:203.0.113.7:41000;transport=udp", 5)
    [contact] = store.contacts("t1", T + 10)
    assert (contact.uri, contact.received) == ("sip:a@10.0.0.5:5060", "sip:203.0.113.7:41000;transport=udp")
    assert store.contacts("t1", T + 301) == []
    assert 0 < redis_client.ttl("warp:reg:t1") <= 10**10


def test_un_register_and_wildcard_remove_contacts(redis_client: redis.Redis) -> None:
    store = RegistrationStore(redis_client)
    store.apply("t1", Plan(add=(("sip:a@h1", 300), ("sip:b@h2", 300))), T, "r", 5)
    assert [b.uri for b in store.apply("t1", Plan(remove=("sip:a@h1",)), T, "r", 5)] == ["sip:b@h2"]
    assert store.apply("t1", Plan(remove_all=True), T, "r", 5) == []
    assert not redis_client.exists("warp:reg:t1")


def test_contacts_beyond_the_trunk_limit_push_out_the_oldest(redis_client: redis.Redis) -> None:
    store = RegistrationStore(redis_client)
    for i in range(4):
        store.apply("t1", Plan(add=((f"sip:c{i}@h", 300),)), T + i, "r", 3)
    assert [b.uri for b in store.bindings("t1", T + 5)] == ["sip:c1@h", "sip:c2@h", "sip:c3@h"]


def test_repeated_failures_block_the_source_until_the_block_expires(redis_client: redis.Redis) -> None:
    defence = Defence(redis_client, threshold=3, window_s=60, block_s=30)
    assert [defence.record_failure("198.51.100.9") for _ in range(3)] == [False, False, True]
    assert defence.is_blocked("198.51.100.9") and not defence.is_blocked("198.51.100.10")
    assert defence.blocks()[0][0] == "198.51.100.9" and 0 < defence.blocks()[0][1] <= 30
    assert defence.clear("198.51.100.9") and not defence.is_blocked("198.51.100.9")


def test_failures_outside_the_window_do_not_add_up(redis_client: redis.Redis) -> None:
    defence = Defence(redis_client, threshold=2, window_s=60, block_s=30)
    defence.record_failure("198.51.100.9")
    redis_client.delete("warp:authfail:198.51.100.9")  # what the window's expiry does
    assert defence.record_failure("198.51.100.9") is False
