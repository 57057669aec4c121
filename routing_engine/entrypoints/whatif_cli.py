"""``warp draft`` and ``warp replay``: what-if before a deck goes live.

    warp draft create NAME [--description TEXT]
    warp draft list [--published]
    warp draft edit NAME TARGET KEY=VALUE ... (--set COLUMN=VALUE ... | --remove)
        e.g. warp draft edit dearer-a vendor_rate vendor=carrier-a prefix=1 --set rate=0.03
    warp draft unedit NAME SEQ
    warp draft show NAME [--json]
    warp draft publish NAME
    warp draft drop NAME
    warp replay --from 2026-11-30T00:00Z --to 2026-12-01T00:00Z [--draft NAME | --version V]
                [--at ISO] [--json] [--list N]

Targets and keys: adapters/drafts.py. Exit status 0 when done, 1 when refused (an edit that does
not apply, a draft that would not validate), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import IO, Any

from routing_engine.adapters import drafts, postgres
from routing_engine.domain import destinations, validation
from routing_engine.domain.replay import Report, Tally
from routing_engine.entrypoints.api import audit
from routing_engine.entrypoints.api.drafts import publish_draft
from routing_engine.ops import whatif
from routing_engine.settings import Settings, SettingsError, load_settings

SHOWN = 20


class ReplayProgress:
    """``[######------]  41%  410,000 of 1,000,000 calls  12.3 s`` on stderr, redrawn at most 5
    times a second — only on a terminal; elsewhere nothing (the report is the output)."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stderr
        self.enabled = self.out.isatty()
        self.started = time.monotonic()
        self._drawn = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._drawn < 0.2:
            return
        self._drawn = now
        share = min(done / total, 1.0) if total else 0.0
        filled = int(share * 30)
        of = f" of {total:,}" if total is not None else ""
        self.out.write(f"\r[{'#' * filled}{'-' * (30 - filled)}] {share:4.0%}  {done:,}{of} calls"
                       f"  {now - self.started:.1f} s")
        self.out.flush()

    def finish(self) -> None:
        if self.enabled:
            self.out.write("\n")
            self.out.flush()


def _when(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _pairs(items: list[str], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{what} expects NAME=VALUE, got {item!r}")
        value: Any = raw
        if raw == "null":
            value = None
        elif raw.startswith("["):
            value = json.loads(raw)
        out[name.strip()] = value
    return out


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _money(value: Decimal) -> str:
    return f"{value:+.6f}"


def _tally_line(label: str, t: Tally) -> str:
    return (f"{label:24} {t.calls:>8,} {t.rerouted:>8,} {t.refused:>8,} {t.newly_routed:>7,}"
            f" {_money(t.revenue_after - t.revenue_before):>14} {_money(t.cost_after - t.cost_before):>14}"
            f" {_money(t.margin_after - t.margin_before):>14}")


def print_report(report: Report, out: IO[str]) -> None:
    out.write(f"replay of {report.start.isoformat()} to {report.end.isoformat()} on {report.candidate}"
              f" (snapshot {report.snapshot})\n")
    t = report.total
    out.write(f"calls {t.calls:,}; rerouted {t.rerouted:,}; would be refused {t.refused:,};"
              f" newly routed {t.newly_routed:,}; not replayable {report.unreplayable:,};"
              f" refused before identification {report.unidentified:,}\n")
    out.write(f"revenue {t.revenue_before} -> {t.revenue_after}; cost {t.cost_before} -> {t.cost_after};"
              f" margin {t.margin_before} -> {t.margin_after} ({_money(t.margin_after - t.margin_before)})\n")
    header = (f"{'':24} {'calls':>8} {'rerouted':>8} {'refused':>8} {'routed':>7} {'revenue delta':>14}"
              f" {'cost delta':>14} {'margin delta':>14}\n")
    for title, groups in (("by destination (customer rate prefix)", report.by_destination),
                          ("by customer (BAN)", report.by_customer)):
        out.write(f"\n{title}\n{header}")
        for key, tally in sorted(groups.items(), key=lambda kv: kv[1].margin_after - kv[1].margin_before):
            out.write(_tally_line(key, tally) + "\n")
    if report.changes:
        out.write(f"\nchanged calls ({report.changed:,}; first {min(SHOWN, len(report.changes))}):\n")
        for c in report.changes[:SHOWN]:
            after = c.vendor_after_name or c.refusal
            out.write(f"  {c.call_id}  {c.destination}  {c.customer}: -> {after}; margin {_money(c.margin_delta)}\n")
    if report.unreplayable:
        out.write(f"\nnot replayable ({report.unreplayable:,}):\n")
        for reason, n in sorted(report.reasons.items()):
            out.write(f"  {n:>8,}  {reason}\n")
        for s in report.skipped[:SHOWN]:
            out.write(f"  {s.call_id}: {s.reason}\n")


def _draft(settings: Settings, args: argparse.Namespace) -> int:
    with postgres.connect(settings.database_url, settings.database.connect_timeout_s) as conn:
        now = datetime.now(UTC)
        realm = settings.auth.realm
        if args.action == "create":
            draft = drafts.create(conn, args.name, _actor(), args.description)
            print(f"warp: draft {draft.name} created")
        elif args.action == "list":
            for d in drafts.listing(conn, args.published):
                state = f"published {d.published_at:%Y-%m-%d %H:%M} as {d.published_version}" if d.published_at \
                    else "open"
                print(f"{d.name:24} {len(d.edits):>4} edits  {state}  by {d.created_by}")
        elif args.action == "edit":
            if args.remove == bool(args.set):
                print("warp: give --set COLUMN=VALUE ... or --remove", file=sys.stderr)
                return 2
            edit = drafts.Edit(args.target, _pairs(args.key, "key"), None if args.remove else _pairs(args.set, "--set"))
            added = drafts.add_edit(conn, args.name, edit, now, realm)
            print(f"warp: draft {args.name}: edit {added.describe()}")
        elif args.action == "unedit":
            drafts.remove_edit(conn, args.name, args.seq)
            print(f"warp: draft {args.name}: edit #{args.seq} removed")
        elif args.action == "show":
            draft = drafts.get(conn, args.name)
            snapshot = drafts.candidate(conn, draft.edits, now, realm)
            found = validation.problems(snapshot, destinations.from_settings(settings))
            if args.json:
                print(json.dumps({**draft.to_json(), "candidate_version": snapshot.version, "problems": found},
                                 indent=2))
                return 0
            print(f"draft {draft.name} by {draft.created_by}, {draft.created_at:%Y-%m-%d %H:%M}"
                  + (f": {draft.description}" if draft.description else ""))
            for e in draft.edits:
                print(f"  {e.describe()}")
            print(f"candidate snapshot {snapshot.version}: "
                  + ("valid" if not found else f"{len(found)} problem(s), publishing is refused"))
            for problem in found[:SHOWN]:
                print(f"  {problem}")
        elif args.action == "publish":
            done = publish_draft(conn, args.name, _actor(), realm, destinations.from_settings(settings))
            print(f"warp: draft {args.name} published: {len(done.draft.edits)} edits, snapshot {done.version}")
        elif args.action == "drop":
            with conn.transaction():
                draft = drafts.drop(conn, args.name)
                audit.record(conn, _actor(), "delete", "draft", draft.id, draft.to_json(), None)
            print(f"warp: draft {args.name} dropped")
    return 0


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    start, end = _when(args.start), _when(args.end)
    if end <= start:
        print("warp: --to must be after --from", file=sys.stderr)
        return 2
    bar = ReplayProgress()
    with postgres.connect(settings.database_url, settings.database.connect_timeout_s) as conn:
        try:
            name, snapshot = whatif.candidate(settings, conn, datetime.now(UTC), args.draft, args.version)
        except whatif.CandidateError as exc:
            print(f"warp: {exc}", file=sys.stderr)
            return 2
        report = whatif.replay(settings, conn, name, snapshot, start, end, _when(args.at) if args.at else None,
                               page_size=args.page_size, max_listed=args.list, progress=bar, count=bar.enabled)
    bar.finish()
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print_report(report, sys.stdout)
    return 0


def main(argv: list[str] | None = None, command: str = "draft") -> int:
    parser = argparse.ArgumentParser(prog=f"warp {command}")
    parser.add_argument("--config", help="settings file (default: $WARP_CONFIG or config/warp.yaml)")
    if command == "draft":
        sub = parser.add_subparsers(dest="action", required=True)
        p = sub.add_parser("create", help="a new, empty draft")
        p.add_argument("name")
        p.add_argument("--description")
        p = sub.add_parser("list", help="open drafts")
        p.add_argument("--published", action="store_true", help="published ones too")
        p = sub.add_parser("edit", help="append an edit: TARGET KEY=VALUE ... --set COLUMN=VALUE ... | --remove")
        p.add_argument("name")
        p.add_argument("target", choices=list(drafts.TARGETS))
        p.add_argument("key", nargs="+", help="which row, e.g. vendor=carrier-a prefix=1")
        p.add_argument("--set", action="append", default=[], metavar="COLUMN=VALUE")
        p.add_argument("--remove", action="store_true")
        p = sub.add_parser("unedit", help="remove an edit by its number")
        p.add_argument("name")
        p.add_argument("seq", type=int)
        for action, text in (("show", "the edits, the candidate's version and its problems"),
                             ("publish", "apply the edits to the live tables, in one audited transaction"),
                             ("drop", "forget the draft")):
            p = sub.add_parser(action, help=text)
            p.add_argument("name")
            if action == "show":
                p.add_argument("--json", action="store_true")
    else:
        parser.add_argument("--from", dest="start", required=True, help="ISO time, first moment of the period")
        parser.add_argument("--to", dest="end", required=True, help="ISO time, end of the period (excluded)")
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--draft", help="replay on this draft (default: the configuration now)")
        which.add_argument("--version", help="or on this published snapshot version")
        parser.add_argument("--at", help="price every call at this moment (default: the call's own)")
        parser.add_argument("--json", action="store_true")
        parser.add_argument("--list", type=int, default=1000, help="changed calls and skipped CDRs listed")
        parser.add_argument("--page-size", type=int, default=2000, help="CDRs read per query")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        return _draft(settings, args) if command == "draft" else _replay(settings, args)
    except (SettingsError, ValueError) as exc:
        print(f"warp: {exc}", file=sys.stderr)
        return 2
    except drafts.DraftError as exc:
        print(f"warp: {exc}", file=sys.stderr)
        return 1


def replay_main(argv: list[str] | None = None) -> int:
    return main(argv, "replay")


if __name__ == "__main__":
    sys.exit(main())
