"""``warp api-keys``: make, list and revoke admin API keys.

    warp api-keys create --name NAME --role admin|operator|read-only [--account BAN|ID] [--expires-days N]
    warp api-keys list
    warp api-keys revoke ID|NAME

``create`` prints the key on stdout, once (everything else goes to stderr, so
``KEY=$(warp api-keys create ...)`` works); only its SHA-256 is stored.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import timedelta
from uuid import UUID

import psycopg

from routing_engine.adapters import postgres
from routing_engine.entrypoints.api import keys
from routing_engine.entrypoints.api.principals import Role
from routing_engine.settings import SettingsError, load_settings


def _account(conn: psycopg.Connection, text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        pass
    row = conn.execute("SELECT id FROM accounts.accounts WHERE ban = %s AND deleted_at IS NULL", (text,)).fetchone()
    if row is None:
        raise keys.KeyProblem(f"no account with BAN {text!r}")
    return UUID(str(row[0]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warp api-keys", description="admin API keys")
    parser.add_argument("--config", help="settings file (default: $WARP_CONFIG or config/warp.yaml)")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("create", help="make a key and print it once")
    p.add_argument("--name", required=True, help="who or what uses it, e.g. portal or alice")
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--account", help="BAN or id: a customer-scoped key (operator or read-only)")
    p.add_argument("--expires-days", type=int, help="the key stops working after this many days")
    sub.add_parser("list", help="keys, without secrets")
    p = sub.add_parser("revoke", help="stop a key at once")
    p.add_argument("key", help="the key's id, or its name")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"warp: settings: {exc}", file=sys.stderr)
        return 2
    actor = f"cli:{getpass.getuser()}"
    try:
        with postgres.connect(settings.database_url, settings.database.connect_timeout_s) as conn:
            if args.action == "create":
                if args.expires_days is not None and args.expires_days <= 0:
                    raise keys.KeyProblem("--expires-days must be positive")
                account = _account(conn, args.account) if args.account else None
                key_id, key = keys.create(conn, args.name, Role(args.role), account, actor,
                                          timedelta(days=args.expires_days) if args.expires_days else None)
                scope = f", customer-scoped to {args.account}" if account else ""
                print(f"warp: API key {key_id} ({args.name}, {args.role}{scope}) created; it is shown once:",
                      file=sys.stderr)
                print(key)
            elif args.action == "list":
                for k in keys.listing(conn):
                    state = "revoked" if k.revoked_at else ("expires " + k.expires_at.isoformat()
                                                            if k.expires_at else "active")
                    print(f"{k.id}  {k.name:20} {k.role:9} {k.key_prefix}…  "
                          f"account={k.account_id or '-'}  {state}  last used {k.last_used_at or 'never'}")
            else:
                info = keys.revoke(conn, args.key, actor)
                print(f"warp: API key {info.id} ({info.name}) revoked", file=sys.stderr)
    except keys.KeyProblem as exc:
        print(f"warp: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
