"""Drafts and replays: edit the routing and price tables without publishing, see what the edits
would do to a period's calls, then publish them in one audited step.

A draft holds row edits (see adapters/drafts.py for the targets and their keys); every edit is
checked by applying the draft to the live tables in a transaction that is rolled back. A replay
decides a period's recorded calls again on a candidate — a draft, a published snapshot version,
or the configuration now — and reports the calls that change vendor or would be refused and the
change in revenue, cost and margin, per destination and per customer (routing_engine/ops/whatif.py).
Carrier staff only; publishing needs the operator role and writes an audit row.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Path
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from routing_engine.adapters import drafts
from routing_engine.domain import validation
from routing_engine.domain.destinations import Guard
from routing_engine.domain.snapshot import RoutingSnapshot
from routing_engine.entrypoints.api import audit
from routing_engine.entrypoints.api.envelope import ApiError, Envelope, error_responses, not_found, ok
from routing_engine.entrypoints.api.fields import Text
from routing_engine.entrypoints.api.openapi import PolicyRoute
from routing_engine.entrypoints.api.principals import OPERATE, READ, Caller
from routing_engine.entrypoints.api.services import Services, connection, services
from routing_engine.ops import whatif

router = APIRouter(tags=["drafts and replay"], route_class=PolicyRoute)

DraftName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Scalar = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] | int | bool | None
Target = Annotated[str, StringConstraints(pattern="^(" + "|".join(drafts.TARGETS) + ")$")]


class DraftCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: DraftName
    description: Text | None = None


class EditCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: Target = Field(description="vendor_rate, customer_rate, plan_vendor, plan or vendor")
    key: dict[str, Scalar] = Field(max_length=8, description="which row: e.g. vendor, prefix, effective_at")
    values: dict[str, Scalar | list[Scalar]] | None = Field(
        default=None, max_length=32, description="the columns to set (money as decimal strings); omit with remove")
    remove: bool = False


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    start: AwareDatetime = Field(alias="from", description="first moment of the period (ISO, with zone)")
    end: AwareDatetime = Field(alias="to", description="end of the period, excluded")
    draft: DraftName | None = None
    version: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{1,64}$")] | None = None
    at: AwareDatetime | None = Field(default=None, description="price every call at this moment (default: its own)")
    max_listed: int = Field(default=1000, ge=0, le=100000, description="changed calls and skipped CDRs listed")


def problems_of(guard: Guard) -> Any:
    def check(snapshot: RoutingSnapshot) -> list[str]:
        return validation.problems(snapshot, guard)
    return check


def publish_draft(conn: psycopg.Connection, name: str, actor: str, realm: str, guard: Guard,
                  request_id: str | None = None) -> drafts.Published:
    """The one way a draft goes live (the API's and the CLI's): its edits, validation, audit row
    and mark as published, in one transaction."""
    def audited(conn: psycopg.Connection, draft: drafts.Draft, version: str) -> None:
        audit.record(conn, actor, "publish", "draft", draft.id, None,
                     {"name": draft.name, "description": draft.description, "version": version,
                      "edits": [e.to_json() for e in draft.edits]}, request_id=request_id)
    return drafts.publish(conn, name, actor, datetime.now(UTC), realm, problems_of(guard), audited)


def _refused(exc: drafts.DraftError) -> ApiError:
    if isinstance(exc, drafts.DraftNotFound):
        return not_found("draft")
    return ApiError(422, str(exc))


def _shown(svc: Services, conn: psycopg.Connection, draft: drafts.Draft) -> dict[str, Any]:
    out = draft.to_json()
    if draft.published_at is None:
        try:
            snapshot = drafts.candidate(conn, draft.edits, datetime.now(UTC), svc.settings.auth.realm)
            out["candidate_version"] = snapshot.version
            out["problems"] = validation.problems(snapshot, svc.guard)
        except drafts.DraftError as exc:  # an edit that applied once no longer does (the tables moved on)
            out["candidate_version"] = None
            out["problems"] = [str(exc)]
    return out


@router.get("/drafts", response_model=Envelope[list[dict[str, Any]]], responses=error_responses(401, 403))
def list_drafts(who: Caller = Depends(READ), conn: psycopg.Connection = Depends(connection),
                published: bool = False) -> Any:
    """Open drafts (with ``published``: published ones too, newest last)."""
    return ok(who.request_id, [d.to_json() for d in drafts.listing(conn, published)])


@router.post("/drafts", status_code=201, response_model=Envelope[dict[str, Any]],
             responses=error_responses(400, 401, 403, 413, 422))
def create_draft(body: DraftCreate, who: Caller = Depends(OPERATE),
                 conn: psycopg.Connection = Depends(connection)) -> Any:
    try:
        draft = drafts.create(conn, body.name, who.actor, body.description)
    except drafts.DraftError as exc:
        raise _refused(exc) from None
    return ok(who.request_id, draft.to_json())


@router.get("/drafts/{name}", response_model=Envelope[dict[str, Any]], responses=error_responses(401, 403, 404, 422))
def show_draft(name: Annotated[DraftName, Path()], who: Caller = Depends(READ), svc: Services = Depends(services),
               conn: psycopg.Connection = Depends(connection)) -> Any:
    """The draft, its edits, the version its candidate snapshot would have and that snapshot's
    validation problems (publishing is refused while there are any)."""
    try:
        draft = drafts.get(conn, name)
    except drafts.DraftError as exc:
        raise _refused(exc) from None
    return ok(who.request_id, _shown(svc, conn, draft))


@router.post("/drafts/{name}/edits", status_code=201, response_model=Envelope[dict[str, Any]],
             responses=error_responses(400, 401, 403, 404, 413, 422))
def add_edit(name: Annotated[DraftName, Path()], body: EditCreate, who: Caller = Depends(OPERATE),
             svc: Services = Depends(services), conn: psycopg.Connection = Depends(connection)) -> Any:
    """Appends an edit once the draft with it applies to today's tables (checked, rolled back)."""
    if body.remove == (body.values is not None):
        raise ApiError(422, "give values, or remove: true")
    try:
        edit = drafts.add_edit(conn, name, drafts.Edit(body.target, body.key, body.values), datetime.now(UTC),
                               svc.settings.auth.realm)
    except drafts.DraftError as exc:
        raise _refused(exc) from None
    return ok(who.request_id, edit.to_json())


@router.delete("/drafts/{name}/edits/{seq}", response_model=Envelope[dict[str, Any]],
               responses=error_responses(401, 403, 404, 422))
def remove_edit(name: Annotated[DraftName, Path()], seq: Annotated[int, Path(ge=1, le=2_000_000_000)],
                who: Caller = Depends(OPERATE), svc: Services = Depends(services),
                conn: psycopg.Connection = Depends(connection)) -> Any:
    try:
        drafts.remove_edit(conn, name, seq)
        draft = drafts.get(conn, name)
    except drafts.DraftError as exc:
        raise _refused(exc) from None
    return ok(who.request_id, _shown(svc, conn, draft))


@router.post("/drafts/{name}/publish", response_model=Envelope[dict[str, Any]],
             responses=error_responses(401, 403, 404, 422))
def publish(name: Annotated[DraftName, Path()], who: Caller = Depends(OPERATE), svc: Services = Depends(services),
            conn: psycopg.Connection = Depends(connection)) -> Any:
    """Applies every edit to the live tables in one transaction with its audit row; refused whole,
    with the problems, if the result would not validate. The snapshot publisher takes it from there."""
    try:
        done = publish_draft(conn, name, who.actor, svc.settings.auth.realm, svc.guard, who.request_id)
    except drafts.DraftError as exc:
        raise _refused(exc) from None
    return ok(who.request_id, {**done.draft.to_json(), "published_version": done.version})


@router.delete("/drafts/{name}", response_model=Envelope[dict[str, Any]], responses=error_responses(401, 403, 404, 422))
def drop_draft(name: Annotated[DraftName, Path()], who: Caller = Depends(OPERATE),
               conn: psycopg.Connection = Depends(connection)) -> Any:
    try:
        with conn.transaction():
            draft = drafts.drop(conn, name)
            audit.record(conn, who.actor, "delete", "draft", draft.id, draft.to_json(), None,
                         request_id=who.request_id)
    except drafts.DraftError as exc:
        raise _refused(exc) from None
    return ok(who.request_id, draft.to_json())


@router.post("/replays", response_model=Envelope[dict[str, Any]], responses=error_responses(400, 401, 403, 404, 422))
def replay(body: ReplayRequest, who: Caller = Depends(READ), svc: Services = Depends(services),
           conn: psycopg.Connection = Depends(connection)) -> Any:
    """Decides the period's outbound calls again on the candidate (a draft, a published version,
    or the configuration now) and reports what changes. Answered when done: long periods take long."""
    if body.end <= body.start:
        raise ApiError(422, "to must be after from")
    try:
        name, snapshot = whatif.candidate(svc.settings, conn, datetime.now(UTC), body.draft, body.version)
    except drafts.DraftError as exc:
        raise _refused(exc) from None
    except whatif.CandidateError as exc:
        raise ApiError(422, str(exc)) from None
    report = whatif.replay(svc.settings, conn, name, snapshot, body.start, body.end, body.at,
                           max_listed=body.max_listed)
    return ok(who.request_id, report.to_json())
