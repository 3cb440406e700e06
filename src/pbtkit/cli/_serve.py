"""The commands of a shared deployment: ``serve`` and ``db``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pbtkit.cli._common import auth_key

__all__ = ["add_db", "add_serve"]


def _cmd_serve(args: argparse.Namespace) -> int:
    from pbtkit._extras import need

    need("service", "pbtkit serve")
    from pbtkit.service.server import serve

    def announce(url: str) -> None:
        print(
            f"pbtkit serve: API at {url}/v1, dashboard at {url}/dashboard "
            "(the same key signs you in)",
            file=sys.stderr,
            flush=True,
        )

    serve(
        args.storage,
        args.checkpoint_root,
        host=args.host,
        port=args.port,
        auth_key=auth_key(args),
        lease_seconds=args.lease_seconds,
        log_level=args.log_level,
        allow_imports=args.allow_import,
        announce=announce,
    )
    return 0


def _cmd_db(args: argparse.Namespace) -> int:
    from pbtkit.store import normalize_url
    from pbtkit.store._schema import SCHEMA_VERSION, schema_version, upgrade

    url = normalize_url(args.storage)
    if args.action == "version":
        print(f"schema version {schema_version(url)} (this pbtkit uses {SCHEMA_VERSION})")
        return 0
    before, after = upgrade(url)
    if before == after:
        print(f"schema version {after}: already up to date")
    else:
        print(f"upgraded the schema from version {before} to {after}; the data is kept")
    return 0


def add_db(sub: Any) -> None:
    p = sub.add_parser("db", help="the database schema: show its version, or upgrade it")
    p.add_argument("action", choices=("upgrade", "version"))
    p.add_argument("--storage", "-s", required=True, help="storage URL")
    p.set_defaults(func=_cmd_db)


def add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve the controller over HTTP for workers and clients")
    p.add_argument("--storage", "-s", default="sqlite:///pbt.db", help="storage URL")
    p.add_argument(
        "--checkpoint-root", default="pbt-checkpoints", help="clients' checkpoints must lie here"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8765, help="port to listen on")
    p.add_argument("--auth-key", help="the key clients must send (default: $PBTKIT_AUTH_KEY)")
    p.add_argument("--lease-seconds", type=float, default=60.0, help="lease length")
    p.add_argument("--log-level", default="warning", help="uvicorn's log level")
    p.add_argument(
        "--allow-import",
        action="append",
        default=[],
        metavar="PACKAGE",
        help="let clients name functions of this package (custom explore); repeatable",
    )
    p.set_defaults(func=_cmd_serve)
