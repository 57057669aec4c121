"""Limits and funds in Redis, atomic across every Kamailio node (one Lua script per step).

Every record of a call here is keyed by the identity the node gave the call at its initial
INVITE (its CDR id, a UUID), never by its Call-ID: a Call-ID is chosen by the caller, and two
calls may share one (two customers by chance, one customer on purpose, a new From tag on a
known Call-ID). Keyed by Call-ID, such calls shared one place in the limits, one reservation
and one charge.

Call limits
  CPS: a token bucket per trunk and per account (capacity = the limit, refilled continuously).
  Concurrent calls: a sorted set per trunk and per account, member = the call, score = the time
  it expires if nobody releases it (a node that dies mid-call leaks nothing for long). A call
  is admitted only if every bucket has a token and every set has room; then all are taken in
  the same script, so two nodes can never both take the last place.

Funds (amounts in whole millionths, so Redis does exact integer arithmetic)
  ``warp:bal:<account>``    live balance; seeded from the Postgres ledger when missing
  ``warp:resv:<account>``   reservations of calls in progress (call -> expiry / amount)
  ``warp:held:<account>``   the running total of those amounts, kept by every script that
                            writes one, so no step sums over the account's calls
  available = balance + credit limit (postpaid only) - held.
  A call reserves a slice of its price (``money.slice_s`` seconds of talk plus the connection
  fee), priced here in Lua with the same rules as ``domain/rating.py`` (billable seconds per
  increment, the charge rounded half-up to the millionth). While it lasts, the node's renewal
  task (``calls/slices.py``) raises its reservation one slice at a time, all the node's due calls
  in one script; a call whose account cannot pay a whole slice gets what the account still has,
  to the increment, and no more: it is cut when that runs out. Both nodes' scripts run in the one
  Redis, one at a time, so together they never take more than the account has. At its end a
  call is charged exactly once (a marker per call), its reservation is released, and the charge
  is appended to the ``warp:ledger`` stream with the call as its reference, which the companion
  writes to ``billing.balance_updates`` (where (kind, reference) is unique).

Admission (limits and the first slice) is one script, one round trip.

One money path: every balance change (a call's charge: ``settle``; a top-up, an adjustment, a
refund: ``post``) is one script that moves the live balance and appends the ledger entry
together, idempotent by its (kind, reference), whichever process makes it (the companion, the
API, the CLI, rerating). No script starts a missing balance from zero: the caller passes the
account's durable balance as the seed (adapters/ledger.durable_balance), else ``Unseeded``.
`warp ledger check` holds live balance = Postgres ledger + entries still in the stream.

Time is passed in by the caller (``now``, seconds since the epoch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from routing_engine.domain import rating

LEDGER_STREAM = "warp:ledger"
CHARGED_TTL_S = 7 * 86400

# Shared by the scripts below: pricing as in domain/rating.py, in whole millionths (a per-minute
# price of p millionths for b billable seconds costs fee + p*b/60 rounded half-up), and the
# account's running reserved total.
_LUA_LIB = """
local function billable(d, ini, sub, mn)
  if d <= 0 then return 0 end
  if d < mn then d = mn end
  if d <= ini then return ini end
  return ini + math.ceil((d - ini) / sub) * sub
end
local function cost(b, p)
  if b <= 0 then return 0 end
  return p[5] + math.floor((2 * p[1] * b + 60) / 120)
end
-- the longest paid length up to `target` (seconds of talk) that `mine + avail` pays for, from
-- `paid` on, one increment at a time when a whole slice is too dear; p = {pm, ini, sub, min, fee}
local function fund(paid, target, mine, avail, p)
  local want = billable(target, p[2], p[3], p[4])
  local c = cost(want, p)
  if c - mine <= avail then return want, c end
  local best, bestc = paid, mine
  local t = billable(paid + 1, p[2], p[3], p[4])
  while t < want do
    local tc = cost(t, p)
    if tc - mine > avail then break end
    best, bestc = t, tc
    t = billable(t + 1, p[2], p[3], p[4])
  end
  return best, bestc
end
-- reservations past their expiry leave the account's total (a node that died held them)
local function sweep(resv, amt, held, now)
  local stale = redis.call('ZRANGEBYSCORE', resv, '-inf', now, 'LIMIT', 0, 500)
  if #stale == 0 then return end
  local sum = 0
  for _, v in ipairs(redis.call('HMGET', amt, unpack(stale))) do
    if v then sum = sum + tonumber(v) end
  end
  redis.call('HDEL', amt, unpack(stale))
  redis.call('ZREM', resv, unpack(stale))
  if sum ~= 0 then redis.call('DECRBY', held, sum) end
end
-- the key lives at least until `at` (the three funds keys of an account always together)
local function keep(key, at, now)
  local ttl = redis.call('TTL', key)
  if ttl < 0 or now + ttl < at then redis.call('EXPIREAT', key, math.ceil(at)) end
end
local function price(argv, i)
  return {tonumber(argv[i]), tonumber(argv[i + 1]), tonumber(argv[i + 2]), tonumber(argv[i + 3]),
          tonumber(argv[i + 4])}
end
"""

# KEYS: cps trunk, cps account, active trunk, active account, [balance, resv, resvamt, held]
# ARGV: now, call, expiry, trunk cps, account cps, trunk max, account max, funds (0/1),
#       [credit, slice_s, cap_s, pm, ini, sub, min, fee]; with funds, ``expiry`` is for a whole
#       first slice, and a call granted less lapses as much sooner
_ADMIT = _LUA_LIB + """
local now = tonumber(ARGV[1])
local call = ARGV[2]
local expiry = tonumber(ARGV[3])
local checks = {}
for i = 0, 1 do
  local rate = tonumber(ARGV[4 + i])
  if rate > 0 then
    local b = redis.call('HMGET', KEYS[1 + i], 't', 'ts')
    local tokens = tonumber(b[1]) or rate
    local ts = tonumber(b[2]) or now
    tokens = math.min(rate, tokens + math.max(0, now - ts) * rate)
    if tokens < 1 then return {'cps', i == 0 and 'trunk' or 'account', 0, 0, 0} end
    checks[#checks + 1] = {KEYS[1 + i], tokens - 1}
  end
end
for i = 0, 1 do
  local max = tonumber(ARGV[6 + i])
  redis.call('ZREMRANGEBYSCORE', KEYS[3 + i], '-inf', now)
  if max > 0 and redis.call('ZSCORE', KEYS[3 + i], call) == false
     and redis.call('ZCARD', KEYS[3 + i]) >= max then
    return {'concurrent', i == 0 and 'trunk' or 'account', 0, 0, 0}
  end
end
local paid, amount, available = 0, 0, 0
if tonumber(ARGV[8]) == 1 then
  sweep(KEYS[6], KEYS[7], KEYS[8], now)
  local p = price(ARGV, 12)
  local mine = tonumber(redis.call('HGET', KEYS[7], call) or '0')
  available = tonumber(redis.call('GET', KEYS[5]) or '0') + tonumber(ARGV[9])
              - tonumber(redis.call('GET', KEYS[8]) or '0')
  local target = math.min(tonumber(ARGV[10]), tonumber(ARGV[11]))
  paid, amount = fund(0, target, mine, available, p)
  if paid <= 0 then return {'funds', 'account', 0, 0, available + mine} end
  expiry = expiry - target + paid  -- the call's places and funds last as long as it may
  redis.call('HSET', KEYS[7], call, amount)
  redis.call('INCRBY', KEYS[8], amount - mine)
  redis.call('ZADD', KEYS[6], expiry, call)
  for k = 6, 8 do keep(KEYS[k], expiry + 60, now) end
  available = available + mine
end
for _, c in ipairs(checks) do
  redis.call('HSET', c[1], 't', tostring(c[2]), 'ts', tostring(now))
  redis.call('EXPIRE', c[1], 120)
end
for i = 0, 1 do
  redis.call('ZADD', KEYS[3 + i], expiry, call)
  keep(KEYS[3 + i], expiry + 60, now)
end
return {'ok', '', paid, amount, available}
"""

# Reservation of a fixed amount (no slices: kept for callers that know their sum).
_RESERVE = _LUA_LIB + """
local now = tonumber(ARGV[1])
local call = ARGV[2]
local expiry = tonumber(ARGV[3])
local first = tonumber(ARGV[4])
local want = tonumber(ARGV[5])
local credit = tonumber(ARGV[6])
sweep(KEYS[2], KEYS[3], KEYS[4], now)
local mine = tonumber(redis.call('HGET', KEYS[3], call) or '0')
local available = tonumber(redis.call('GET', KEYS[1]) or '0') + credit
                  - tonumber(redis.call('GET', KEYS[4]) or '0') + mine
if available < first then return {0, available} end
local amount = math.min(available, want)
redis.call('HSET', KEYS[3], call, amount)
redis.call('INCRBY', KEYS[4], amount - mine)
redis.call('ZADD', KEYS[2], expiry, call)
for k = 2, 4 do keep(KEYS[k], expiry + 60, now) end
return {amount, available}
"""

# One tick of a node's renewal task: every due call in one script. Per call 6 KEYS (balance,
# resv, resvamt, held, active trunk, active account) and 10 ARGV (call, credit, paid_s,
# target_s, expiry, then the price: pm, ini, sub, min, fee). Answers, per call, its paid length after the
# tick and its reservation (-1, -1: it has none any more: settled, or lapsed).
_RENEW = _LUA_LIB + """
local now = tonumber(ARGV[1])
local out = {}
local n = (#ARGV - 1) / 10
for i = 0, n - 1 do
  local k, a = i * 6, 2 + i * 10
  local call = ARGV[a]
  sweep(KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], now)
  local mine = redis.call('HGET', KEYS[k + 3], call)
  if not mine then
    out[#out + 1] = {-1, -1}
  else
    mine = tonumber(mine)
    local paid = tonumber(ARGV[a + 2])
    local expiry = tonumber(ARGV[a + 4])
    local p = price(ARGV, a + 5)
    local avail = tonumber(redis.call('GET', KEYS[k + 1]) or '0') + tonumber(ARGV[a + 1])
                  - tonumber(redis.call('GET', KEYS[k + 4]) or '0')
    local target = tonumber(ARGV[a + 3])
    local got, amount = fund(paid, target, mine, avail, p)
    if got > paid then
      redis.call('HSET', KEYS[k + 3], call, amount)
      redis.call('INCRBY', KEYS[k + 4], amount - mine)
    else
      got, amount = paid, mine
    end
    expiry = expiry - target + got
    redis.call('ZADD', KEYS[k + 2], 'XX', 'GT', expiry, call)
    for j = 2, 4 do keep(KEYS[k + j], expiry + 60, now) end
    for j = 5, 6 do
      redis.call('ZADD', KEYS[k + j], 'XX', 'GT', expiry, call)
      keep(KEYS[k + j], expiry + 60, now)
    end
    out[#out + 1] = {got, amount}
  end
end
return out
"""

_SETTLE = """
local call = ARGV[1]
local cost = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[6] == '' then return -1 end
  redis.call('SET', KEYS[1], ARGV[6])
end
local charged = 0
if cost > 0 and redis.call('SET', KEYS[4], '1', 'NX', 'EX', tonumber(ARGV[5])) then
  redis.call('DECRBY', KEYS[1], cost)
  redis.call('XADD', KEYS[5], '*', 'account_id', ARGV[3], 'amount_micros', tostring(-cost),
             'kind', 'call_charge', 'reference', call, 'at', ARGV[4])
  charged = 1
end
redis.call('ZREM', KEYS[2], call)
local held = redis.call('HGET', KEYS[3], call)
if held then
  redis.call('HDEL', KEYS[3], call)
  redis.call('DECRBY', KEYS[6], tonumber(held))
end
return charged
"""

# The one way a balance moves other than a call's charge: a top-up, an adjustment, a refund.
# KEYS: balance, ledger stream, the reference's marker. ARGV: amount, account, reference, kind,
# at, marker TTL, seed (the durable balance, '' when not known), ledger row id ('' for none).
_POST = """
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {'duplicate', redis.call('GET', KEYS[1]) or ''}
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[7] == '' then return {'unseeded', ''} end
  redis.call('SET', KEYS[1], ARGV[7])
end
redis.call('SET', KEYS[3], '1', 'EX', tonumber(ARGV[6]))
local balance = redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]))
local entry = {'account_id', ARGV[2], 'amount_micros', ARGV[1], 'kind', ARGV[4], 'reference', ARGV[3],
               'at', ARGV[5]}
if ARGV[8] ~= '' then
  entry[#entry + 1] = 'id'
  entry[#entry + 1] = ARGV[8]
end
redis.call('XADD', KEYS[2], '*', unpack(entry))
return {'posted', tostring(balance)}
"""

KINDS = ("topup", "adjustment", "refund")  # posted with Wallet.post; call charges with Wallet.settle


class Unseeded(LookupError):
    """The account has no live balance in Redis yet: it must be seeded from the durable ledger
    (adapters/ledger.durable_balance) before money moves, or the move would start from zero."""


class Duplicate(ValueError):
    """A balance change with this (kind, reference) was posted already: nothing moved again."""


@dataclass(frozen=True, slots=True)
class Posted:
    balance_micros: int   # the live balance after the change


@dataclass(frozen=True, slots=True)
class Admission:
    ok: bool
    limit: str = ""   # cps | concurrent | funds
    scope: str = ""   # trunk | account
    paid_s: int = 0          # with funds asked: the seconds of talk the first slice pays for
    reserved_micros: int = 0
    available_micros: int = 0  # what the account had available before


@dataclass(frozen=True, slots=True)
class SlicePrice:
    """A call's price as the Lua scripts take it: whole millionths, whole seconds."""

    per_minute_micros: int
    initial_s: int
    subsequent_s: int
    min_duration_s: int
    fee_micros: int

    @classmethod
    def of(cls, price: rating.Price) -> SlicePrice:
        return cls(rating.to_micros(price.per_minute), price.initial_s, max(price.subsequent_s, 1),
                   price.min_duration_s, rating.to_micros(price.connection_fee))

    def args(self) -> list[int]:
        return [self.per_minute_micros, self.initial_s, self.subsequent_s, self.min_duration_s, self.fee_micros]


@dataclass(frozen=True, slots=True)
class Funds:
    """What a call asks of its account at admission: its first slice, at most ``cap_s``."""

    credit_micros: int
    slice_s: int
    cap_s: int
    price: SlicePrice


@dataclass(frozen=True, slots=True)
class Renewal:
    """One due call of a node's tick: it is paid up to ``paid_s`` and asks up to ``target_s``;
    paid to the target, its places and reservation would last until ``expiry`` (each second it
    gets less brings that one second nearer)."""

    call: UUID
    account_id: UUID
    trunk_id: UUID
    credit_micros: int
    paid_s: int
    target_s: int
    expiry: float
    price: SlicePrice


def _member(call: UUID) -> str:
    """A call's member name in the sets and hashes: its identity, never a caller's text."""
    if not isinstance(call, UUID):
        raise TypeError(f"a call is identified by its UUID, not by {type(call).__name__} {call!r}")
    return str(call)


def _by_call(scored: list[tuple[str, float]]) -> dict[UUID, float]:
    """Members with their scores, by call (a member that is no UUID was left by an older release,
    keyed by Call-ID: it expires on its own and is no call of ours to report)."""
    out = {}
    for member, score in scored:
        try:
            out[UUID(member)] = float(score)
        except ValueError:
            continue
    return out


class Limits:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._admit = client.register_script(_ADMIT)

    @staticmethod
    def _keys(trunk_id: UUID, account_id: UUID) -> list[str]:
        return [f"warp:cps:trunk:{trunk_id}", f"warp:cps:account:{account_id}",
                f"warp:active:trunk:{trunk_id}", f"warp:active:account:{account_id}"]

    def admit(self, call: UUID, trunk_id: UUID, account_id: UUID, now: float, hold_s: int,
              trunk_cps: int | None, account_cps: int | None,
              trunk_max: int | None, account_max: int | None, funds: Funds | None = None) -> Admission:
        """The call's place in every limit and, with ``funds``, its first slice: one script, so
        one round trip, and nothing is taken unless everything is granted."""
        keys = self._keys(trunk_id, account_id)
        args: list[Any] = [repr(now), _member(call), repr(now + hold_s), trunk_cps or 0, account_cps or 0,
                           trunk_max or 0, account_max or 0, 0 if funds is None else 1]
        if funds is not None:
            keys += Wallet._keys(account_id)
            args += [funds.credit_micros, funds.slice_s, funds.cap_s, *funds.price.args()]
        verdict, scope, paid, amount, available = self._admit(keys=keys, args=args)
        if str(verdict) != "ok":
            return Admission(False, str(verdict), str(scope), available_micros=int(available))
        return Admission(True, paid_s=int(paid), reserved_micros=int(amount), available_micros=int(available))

    def extend(self, call: UUID, trunk_id: UUID, account_id: UUID, until: float, pipe: Any = None) -> None:
        """Move the self-healing expiry of an admitted call (once its real length is known).
        Given a pipeline, the commands join it and its owner executes it."""
        own = pipe is None
        pipe = self.client.pipeline() if own else pipe
        for key in self._keys(trunk_id, account_id)[2:]:
            pipe.zadd(key, {_member(call): until}, xx=True)
            pipe.expireat(key, int(until) + 60, gt=True)
        if own:
            pipe.execute()

    def release(self, call: UUID, trunk_id: UUID, account_id: UUID, pipe: Any = None) -> None:
        own = pipe is None
        pipe = self.client.pipeline() if own else pipe
        for key in self._keys(trunk_id, account_id)[2:]:
            pipe.zrem(key, _member(call))
        if own:
            pipe.execute()

    def release_many(self, calls: list[tuple[UUID, UUID, UUID]]) -> None:
        """Release finished calls (call, trunk, account) in one round trip; idempotent."""
        if not calls:
            return
        pipe = self.client.pipeline(transaction=False)
        for call, trunk_id, account_id in calls:
            for key in self._keys(trunk_id, account_id)[2:]:
                pipe.zrem(key, _member(call))
        pipe.execute()

    def expiries(self, trunk_id: UUID) -> dict[UUID, float]:
        """Call -> the moment the trunk's place of that call frees itself if nobody releases it."""
        key = self._keys(trunk_id, trunk_id)[2]
        return _by_call(self.client.zrange(key, 0, -1, withscores=True))

    def active(self, trunk_id: UUID, account_id: UUID, now: float) -> tuple[int, int]:
        keys = self._keys(trunk_id, account_id)[2:]
        return tuple(int(self.client.zcount(k, now, "+inf")) for k in keys)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Reservation:
    micros: int          # reserved for this call; 0 means refused
    available: int       # what the account had available before


class Wallet:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._post = client.register_script(_POST)
        self._renew = client.register_script(_RENEW)

    @staticmethod
    def _keys(account_id: UUID) -> list[str]:
        return [f"warp:bal:{account_id}", f"warp:resv:{account_id}", f"warp:resvamt:{account_id}",
                f"warp:held:{account_id}"]

    def reserve(self, call: UUID, account_id: UUID, now: float, hold_s: int, first_micros: int,
                want_micros: int, credit_micros: int) -> Reservation:
        amount, available = self._reserve(keys=self._keys(account_id), args=[
            repr(now), _member(call), repr(now + hold_s), first_micros, want_micros, credit_micros])
        return Reservation(int(amount), int(available))

    def extend(self, call: UUID, account_id: UUID, until: float, pipe: Any = None) -> None:
        """Move the expiry of a call's reservation (once its real length is known), so a node
        that dies mid-call holds the account's funds only as long as that call could have
        lasted, not for the longest call allowed. Given a pipeline, the commands join it."""
        keys = self._keys(account_id)
        own = pipe is None
        pipe = self.client.pipeline() if own else pipe
        pipe.zadd(keys[1], {_member(call): until}, xx=True)
        for key in keys[1:]:
            pipe.expireat(key, int(until) + 60, gt=True)
        if own:
            pipe.execute()

    def expiries(self, account_id: UUID) -> dict[UUID, float]:
        """Call -> the moment its reservation lapses if nobody settles it."""
        return _by_call(self.client.zrange(self._keys(account_id)[1], 0, -1, withscores=True))

    def settle(self, call: UUID, account_id: UUID, cost_micros: int, at_iso: str,
               seed_micros: int | None = None) -> bool:
        """Charge the call once and release its reservation; True if this settlement charged.
        The ledger entry's reference is the call (its CDR id), unique per call. An account with
        no live balance is charged only given ``seed_micros`` (its durable balance): else
        ``Unseeded`` is raised and nothing changes."""
        result = int(self._settle_one(call, account_id, cost_micros, at_iso, seed_micros))
        if result < 0:
            raise Unseeded(str(account_id))
        return bool(result)

    def settle_many(self, charges: list[tuple[UUID, UUID, int, str]]) -> list[bool | None]:
        """``settle`` of (call, account, cost_micros, at_iso) each, in one round trip: per charge
        True (charged now), False (charged before) or None (its account is not seeded: nothing
        changed for it; settle it alone with ``seed_micros``). The scripts run one by one, each
        atomic, as ``settle`` would run them."""
        if not charges:
            return []
        pipe = self.client.pipeline(transaction=False)
        for call, account_id, cost_micros, at_iso in charges:
            self._settle_one(call, account_id, cost_micros, at_iso, None, client=pipe)
        return [None if int(r) < 0 else bool(int(r)) for r in pipe.execute()]

    def _settle_one(self, call: UUID, account_id: UUID, cost_micros: int, at_iso: str,
                    seed_micros: int | None, client: Any = None) -> Any:
        """The settle script for one call (queued on ``client`` when it is a pipeline)."""
        member = _member(call)
        bal, resv, resvamt, held = self._keys(account_id)
        seed = "" if seed_micros is None else str(int(seed_micros))
        return self._settle(keys=[bal, resv, resvamt, f"warp:charged:{member}", LEDGER_STREAM, held],
                            args=[member, cost_micros, str(account_id), at_iso, CHARGED_TTL_S, seed], client=client)

    def post(self, account_id: UUID, micros: int, kind: str, reference: str, at_iso: str,
             seed_micros: int | None = None, entry_id: UUID | None = None) -> Posted:
        """Move the live balance and append the ledger entry, in one step: the one path of a
        top-up, an adjustment or a refund, whichever process makes it. Idempotent by (kind,
        reference): a second post of it raises ``Duplicate`` and moves nothing (the marker lives
        ``CHARGED_TTL_S``; Postgres' unique (kind, reference) holds it for ever, so callers that
        can also check there first: adapters/ledger.post). ``entry_id`` is the ledger row's id
        when the caller wrote the row already (the companion's insert of it is then a no-op)."""
        if kind not in KINDS:
            raise ValueError(f"unknown balance change {kind!r} (one of {', '.join(KINDS)})")
        if not reference:
            raise ValueError("a balance change needs a reference (it is what makes it idempotent)")
        keys = [self._keys(account_id)[0], LEDGER_STREAM, f"warp:posted:{kind}:{reference}"]
        verdict, balance = (str(x) for x in self._post(keys=keys, args=[
            int(micros), str(account_id), reference, kind, at_iso, CHARGED_TTL_S,
            "" if seed_micros is None else str(int(seed_micros)), "" if entry_id is None else str(entry_id)]))
        if verdict == "unseeded":
            raise Unseeded(str(account_id))
        if verdict == "duplicate":
            raise Duplicate(f"{kind} {reference!r} was posted already")
        return Posted(int(balance))

    def topup(self, account_id: UUID, micros: int, reference: str, at_iso: str, kind: str = "topup",
              seed_micros: int | None = None) -> int:
        """``post`` of a top-up; the live balance after it."""
        return self.post(account_id, micros, kind, reference, at_iso, seed_micros).balance_micros

    def balance(self, account_id: UUID) -> int | None:
        value = self.client.get(self._keys(account_id)[0])
        return None if value is None else int(value)

    def reserved(self, account_id: UUID) -> int:
        """The sum of the account's reservations, counted one by one (a check on ``held``)."""
        return sum(int(v) for v in self.client.hvals(self._keys(account_id)[2]))

    def held(self, account_id: UUID) -> int:
        """The account's running reserved total, as admission and renewal read it."""
        return int(self.client.get(self._keys(account_id)[3]) or 0)

    def renew(self, due: list[Renewal], now: float) -> list[tuple[int, int]]:
        """One tick of a node's renewal task, every due call in one script: per call, its paid
        length and its reservation after the tick ((-1, -1): it holds none any more)."""
        if not due:
            return []
        keys: list[str] = []
        args: list[Any] = [repr(now)]
        for r in due:
            keys += [*self._keys(r.account_id), *Limits._keys(r.trunk_id, r.account_id)[2:]]
            args += [_member(r.call), r.credit_micros, r.paid_s, r.target_s, repr(r.expiry), *r.price.args()]
        return [(int(a), int(b)) for a, b in self._renew(keys=keys, args=args)]

    def seed(self, balances: dict[UUID, int]) -> int:
        """Set live balances that are missing from the durable ledger; never overwrites."""
        pipe = self.client.pipeline()
        for account_id, micros in balances.items():
            pipe.set(self._keys(account_id)[0], micros, nx=True)
        return sum(1 for r in pipe.execute() if r)


def ledger_entry(data: dict[str, str]) -> dict[str, Any]:
    """A ledger stream entry, checked, as the row billing.balance_updates takes (``id`` is None
    unless the entry names the row's id)."""
    try:
        return {"account_id": UUID(data["account_id"]), "amount_micros": int(data["amount_micros"]),
                "kind": data["kind"], "reference": data["reference"], "at": data["at"],
                "id": UUID(data["id"]) if data.get("id") else None}
    except (KeyError, ValueError) as exc:
        raise ValueError(f"ledger entry unreadable: {json.dumps(data)[:200]}") from exc
