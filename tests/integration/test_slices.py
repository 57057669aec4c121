"""Funds as renewable slices against the real Redis: admission with its first slice in one
script, the per-node renewal script, the running reserved total, and two nodes at once."""

import random
import threading
import uuid
from decimal import Decimal

import redis

from routing_engine.adapters.money import Funds, Limits, Renewal, SlicePrice, Wallet
from routing_engine.domain import rating
from routing_engine.domain.rating import Price, to_micros

T = 1_800_000_000.0
TRUNK = uuid.uuid4()
PER_SECOND = Price(Decimal("0.60"), 1, 1)           # 0.01 a second
PER_MINUTE = Price(Decimal("0.10"), 60, 60, connection_fee=Decimal("0.05"))


def funds(price: Price, slice_s: int = 20, credit: int = 0, cap_s: int = 14_400) -> Funds:
    return Funds(credit, slice_s, cap_s, SlicePrice.of(price))


def admit(limits: Limits, account: uuid.UUID, f: Funds, call: uuid.UUID | None = None, now: float = T,
          trunk: uuid.UUID = TRUNK):
    return limits.admit(call or uuid.uuid4(), trunk, account, now, 180, None, None, None, None, f)


def renewal(call: uuid.UUID, account: uuid.UUID, price: Price, paid: int, target: int, credit: int = 0,
            expiry: float = T + 300) -> Renewal:
    return Renewal(call, account, TRUNK, credit, paid, target, expiry, SlicePrice.of(price))


def test_the_first_slice_is_priced_in_redis_exactly_as_rating_prices_it(redis_client: redis.Redis) -> None:
    limits, wallet = Limits(redis_client), Wallet(redis_client)
    prices = [PER_SECOND, PER_MINUTE, Price(Decimal("0.013457"), 6, 6), Price(Decimal("1.234567"), 30, 6, 45),
              Price(Decimal("0.0001"), 1, 1, connection_fee=Decimal("0.000001"))]
    for price in prices:
        for slice_s in (1, 7, 20, 60, 61, 3600):
            account = uuid.uuid4()
            wallet.topup(account, 10**9, f"t-{account}", "2026-12-01T00:00:00+00:00", seed_micros=0)
            got = admit(limits, account, funds(price, slice_s))
            assert got.ok
            assert got.paid_s == rating.billable_seconds(slice_s, price), (price, slice_s)
            assert got.reserved_micros == to_micros(rating.charge(slice_s, price)), (price, slice_s)
            assert wallet.held(account) == wallet.reserved(account) == got.reserved_micros


def test_an_account_short_of_a_whole_slice_gets_what_it_pays_for_to_the_increment(
        redis_client: redis.Redis) -> None:
    limits, wallet = Limits(redis_client), Wallet(redis_client)
    account = uuid.uuid4()
    wallet.topup(account, to_micros(Decimal("0.075")), f"t-{account}", "2026-12-01T00:00:00+00:00", seed_micros=0)
    got = admit(limits, account, funds(PER_SECOND, 20))
    assert (got.paid_s, got.reserved_micros) == (7, 70_000)  # 7 whole seconds; half a cent is left
    refused = admit(limits, account, funds(PER_SECOND, 20))
    assert (refused.ok, refused.limit, refused.available_micros) == (False, "funds", 5_000)
    assert limits.active(TRUNK, account, T) == (1, 1)  # a call refused for funds takes no place


def test_renewal_grants_whole_slices_then_the_last_increments_then_nothing(redis_client: redis.Redis) -> None:
    limits, wallet = Limits(redis_client), Wallet(redis_client)
    account = uuid.uuid4()  # funded for 90 s
    wallet.topup(account, to_micros(Decimal("0.90")), f"t-{account}", "2026-12-01T00:00:00+00:00", seed_micros=0)
    calls = [uuid.uuid4() for _ in range(3)]
    for c in calls:
        assert admit(limits, account, funds(PER_SECOND, 20), c).paid_s == 20
    got = wallet.renew([renewal(c, account, PER_SECOND, 20, 40) for c in calls], T + 17)
    assert got == [(40, 400_000), (30, 300_000), (20, 200_000)]
    assert wallet.held(account) == wallet.reserved(account) == to_micros(Decimal("0.90"))
    assert wallet.renew([renewal(c, account, PER_SECOND, p, p + 20) for c, p in zip(calls, (40, 30, 20), strict=True)],
                        T + 27) == [(40, 400_000), (30, 300_000), (20, 200_000)]
    for c, paid in zip(calls, (40, 30, 20), strict=True):
        wallet.settle(c, account, to_micros(rating.charge(paid, PER_SECOND)), "2026-12-01T00:01:00+00:00")
    assert wallet.balance(account) == 0 and wallet.held(account) == wallet.reserved(account) == 0


def test_a_settled_or_lapsed_call_is_not_renewed(redis_client: redis.Redis) -> None:
    limits, wallet = Limits(redis_client), Wallet(redis_client)
    account = uuid.uuid4()
    wallet.topup(account, 10**7, f"t-{account}", "2026-12-01T00:00:00+00:00", seed_micros=0)
    done, lapsed = uuid.uuid4(), uuid.uuid4()
    admit(limits, account, funds(PER_SECOND), done)
    admit(limits, account, funds(PER_SECOND), lapsed)
    wallet.settle(done, account, 0, "2026-12-01T00:00:10+00:00")
    got = wallet.renew([renewal(done, account, PER_SECOND, 20, 40), renewal(lapsed, account, PER_SECOND, 20, 40)],
                       T + 10_000)  # long after the lapsed call's reservation expired (its node died)
    assert got == [(-1, -1), (-1, -1)]
    assert wallet.held(account) == wallet.reserved(account) == 0


def test_a_lapsed_reservation_leaves_the_running_total_at_the_next_admission(redis_client: redis.Redis) -> None:
    limits, wallet = Limits(redis_client), Wallet(redis_client)
    account = uuid.uuid4()
    wallet.topup(account, to_micros(Decimal("0.20")), f"t-{account}", "2026-12-01T00:00:00+00:00", seed_micros=0)
    assert admit(limits, account, funds(PER_SECOND, 20)).paid_s == 20  # holds all 0.20; its node dies
    assert not admit(limits, account, funds(PER_SECOND, 20), now=T + 100).ok
    later = admit(limits, account, funds(PER_SECOND, 20), now=T + 181)  # past its expiry (hold 180 s)
    assert later.ok and later.reserved_micros == 200_000
    assert wallet.held(account) == wallet.reserved(account) == 200_000


def test_postpaid_credit_bounds_slices_below_zero(redis_client: redis.Redis) -> None:
    limits, wallet = Limits(redis_client), Wallet(redis_client)
    account = uuid.uuid4()
    credit = to_micros(Decimal("1.00"))
    got = [admit(limits, account, funds(PER_MINUTE, 60, credit)) for _ in range(8)]
    # 0.15 a call (fee and a minute): six calls fit in 1.00 of credit, the seventh gets nothing
    assert [g.ok for g in got] == [True] * 6 + [False] * 2
    assert wallet.held(account) == 6 * 150_000


def test_two_nodes_renewing_at_once_never_take_more_than_the_account_has(redis_client: redis.Redis) -> None:
    account = uuid.uuid4()
    balance = to_micros(Decimal("3.00"))
    Wallet(redis_client).topup(account, balance, f"t-{account}", "2026-12-01T00:00:00+00:00", seed_micros=0)
    nodes = [redis.Redis(**redis_client.connection_pool.connection_kwargs) for _ in range(2)]
    calls: list[list[uuid.UUID]] = [[], []]
    for n, client in enumerate(nodes):
        for _ in range(10):
            c = uuid.uuid4()
            assert admit(Limits(client), account, funds(PER_SECOND, 5), c).ok
            calls[n].append(c)
    paid = [dict.fromkeys(calls[0], 5), dict.fromkeys(calls[1], 5)]

    def node(n: int) -> None:
        wallet = Wallet(nodes[n])
        for tick in range(40):
            due = [renewal(c, account, PER_SECOND, p, p + random.choice((1, 5, 13))) for c, p in paid[n].items()]
            for r, (got, _) in zip(due, wallet.renew(due, T + tick), strict=True):
                paid[n][r.call] = got

    threads = [threading.Thread(target=node, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wallet = Wallet(redis_client)
    total_paid = sum(to_micros(rating.charge(p, PER_SECOND)) for node_paid in paid for p in node_paid.values())
    assert total_paid == wallet.held(account) == wallet.reserved(account) == balance  # all of it, not a micro more
