"""What-if: replay a period's calls against a candidate configuration, for the CLI and the API.

The candidate is a draft (its edits applied to today's configuration and rolled back, see
adapters/drafts.py), a published snapshot version still kept by the snapshot store, or, with
neither, the configuration in Postgres now. Every call is decided by ``bootstrap.Decider`` —
the decider of the SIP workers, ``warp route explain`` and the API's explain — with the LRN its
CDR recorded. Gateway health and vendor quality are not consulted (every gateway counts as up,
no vendor is demoted): a replay judges the configuration, not the network of the moment it runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime

import psycopg

from routing_engine.adapters import drafts, replay_source
from routing_engine.bootstrap import Decider, snapshot_store
from routing_engine.domain.replay import Report, Unreplayable, compare, recorded_lrn, request_of
from routing_engine.domain.snapshot import RoutingSnapshot
from routing_engine.settings import Settings

Progress = Callable[[int, int | None], None]  # calls done, calls in all (None: not counted)
_UNIDENTIFIED = frozenset({401, 403, 407})  # the refusals of a call whose trunk is not known


class CandidateError(Exception):
    pass


def candidate(settings: Settings, conn: psycopg.Connection, now: datetime, draft: str | None = None,
              version: str | None = None) -> tuple[str, RoutingSnapshot]:
    """A name for the candidate and its snapshot."""
    if draft is not None and version is not None:
        raise CandidateError("give a draft or a version, not both")
    if draft is not None:
        found = drafts.get(conn, draft)
        return f"draft {draft}", drafts.candidate(conn, found.edits, now, settings.auth.realm)
    if version is not None:
        store = snapshot_store(settings)
        problem = store.readable(version) if store.path(version).exists() else "not kept by the snapshot store"
        if problem is not None:
            raise CandidateError(f"snapshot version {version}: {problem}")
        return f"version {version}", store.load(version)
    return "configuration now", drafts.candidate(conn, (), now, settings.auth.realm)


def replay(settings: Settings, conn: psycopg.Connection, name: str, snapshot: RoutingSnapshot,
           start: datetime, end: datetime, at: datetime | None = None, page_size: int = 2000,
           max_listed: int = 1000, progress: Progress | None = None, count: bool = False) -> Report:
    """Every outbound CDR of [start, end) decided again on ``snapshot``; ``at`` prices every call
    at that moment instead of its own. A CDR that cannot be replayed is reported with its reason
    and the rest go on."""
    report = Report(name, snapshot.version, start, end, max_listed)
    total = replay_source.count(conn, start, end) if count else None
    base = Decider(settings.routing.default_region)
    done = 0
    for page in replay_source.pages(conn, start, end, page_size):
        for call in page:
            if call.trunk_id is None and call.sip_code in _UNIDENTIFIED:
                report.unidentified += 1  # a scanner's INVITE, a failed digest: never reached routing
                continue
            try:
                request = request_of(call)
                assert call.trunk_id is not None  # request_of refuses a CDR without one
                if call.trunk_id not in snapshot.trunks:
                    raise Unreplayable(f"unknown trunk: {call.trunk_id} is not in the candidate")
                decide = dataclasses.replace(base, lrn=recorded_lrn(call))
                decision = decide(request, snapshot, at or call.invite_at, trunk_id=call.trunk_id, method="replay")
                account = snapshot.accounts.get(call.account_id) if call.account_id else None
                report.add(compare(call, decision, account.ban if account else None))
            except Unreplayable as exc:
                report.skip(call.cdr_id, call.call_id, str(exc))
            except Exception as exc:  # one bad record never stops the rest
                report.skip(call.cdr_id, call.call_id, f"decision failed: {type(exc).__name__}: {exc}")
        done += len(page)
        if progress is not None:
            progress(done, total)
    return report
