"""Write ``openapi.json``, the schema of pbtkit's HTTP API, or check that it is current.

    python scripts/openapi.py          # (re)write openapi.json at the repository root
    python scripts/openapi.py --check  # exit 1 when openapi.json differs from the app's schema

The schema is taken from :func:`pbtkit.service.server.create_app` built on a throwaway
SQLite file and checkpoint root, neither of which may show up in it: the file must read
the same on every machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OPENAPI = ROOT / "openapi.json"
STALE = "openapi.json is stale: run python scripts/openapi.py"

__all__ = ["OPENAPI", "STALE", "main", "render", "schema"]


def schema() -> dict[str, Any]:
    """The OpenAPI document the service publishes.

    Raises:
        RuntimeError: A path of the throwaway store leaked into the schema, which would
            make the file differ from machine to machine.
    """
    from pbtkit.service.server import create_app
    from pbtkit.store import open_store

    with tempfile.TemporaryDirectory(prefix="pbtkit-openapi-") as scratch:
        with open_store(f"sqlite:///{Path(scratch) / 'openapi.db'}") as store:
            app = create_app(store, Path(scratch) / "checkpoints")
            document: dict[str, Any] = app.app.openapi()
        text = json.dumps(document)
        for leaked in {scratch, str(Path(scratch).resolve())}:
            if leaked in text:
                raise RuntimeError(
                    f"the OpenAPI schema names the temporary directory {leaked}; keep "
                    "server-specific values (paths, storage URLs) out of the app's metadata"
                )
    return document


def render(document: dict[str, Any]) -> str:
    """The schema as the committed file holds it: sorted keys, two-space indent, newline."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write or check the schema file; returns the exit code."""
    parser = argparse.ArgumentParser(description="Write or check openapi.json.")
    parser.add_argument(
        "--check", action="store_true", help="compare instead of writing; exit 1 if stale"
    )
    parser.add_argument(
        "--output", type=Path, default=OPENAPI, help="the schema file (default: openapi.json)"
    )
    args = parser.parse_args(argv)
    expected = render(schema())
    target: Path = args.output
    if args.check:
        current = target.read_text(encoding="utf-8") if target.is_file() else None
        if current != expected:
            print(STALE, file=sys.stderr)
            return 1
        return 0
    target.write_text(expected, encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
