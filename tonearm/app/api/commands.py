"""``tonearm api`` and ``tonearm keys create|list|revoke``: registered on the CLI's subparsers."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from tonearm.app.apikeys import SCOPES, KeyNotFound, KeyStore

__all__ = ("add_command",)


def _api(config: Callable[..., Any]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from tonearm.app.api.server import serve_api

        return serve_api(config(args, api={"host": args.host, "port": args.port}))
    return run


def _keys(config: Callable[..., Any]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        store = KeyStore(config(args))
        try:
            if args.keys_command == "create":
                key, text = store.create(args.scope, args.name or "")
                print(f"created key {key.id} ({' '.join(sorted(key.scopes))}); it is shown once, store it now:")
                print(text)
            elif args.keys_command == "list":
                for key in store.list():
                    if args.json:
                        print(json.dumps(key.to_json()))
                    else:
                        state = "revoked" if key.revoked_at else "active"
                        print(f"{key.id}  {state:<8} {','.join(sorted(key.scopes)):<20} {key.name}")
            else:
                try:
                    key = store.revoke(args.id)
                except KeyNotFound as exc:
                    print(f"tonearm: {exc.args[0]}", file=sys.stderr)
                    return 1
                print(f"revoked key {key.id}")
        finally:
            store.close()
        return 0
    return run


def add_command(sub: Any, config: Callable[..., Any]) -> None:
    s = sub.add_parser("api", help="run the management API (uploads, jobs, takedown, repackage)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.set_defaults(func=_api(config))

    s = sub.add_parser("keys", help="API keys of the management API (stored hashed in the catalog)")
    keys = s.add_subparsers(dest="keys_command", required=True)
    c = keys.add_parser("create", help="a new key; printed once")
    c.add_argument("--scope", action="append", choices=SCOPES, required=True, help="repeat for several scopes")
    c.add_argument("--name", help="what the key is for (at most 100 characters)")
    c.set_defaults(func=_keys(config))
    ls = keys.add_parser("list", help="ids, scopes, names (never the keys)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_keys(config))
    r = keys.add_parser("revoke", help="revoke a key by its id")
    r.add_argument("id")
    r.set_defaults(func=_keys(config))
