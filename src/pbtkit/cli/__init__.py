"""The ``pbtkit`` command: run, status, demo, worker, serve, db; plot, export, best, dashboard.

Each group of commands lives in its own module (``_train``, ``_look``, ``_serve``) with the
parser of each command beside its code; every heavy import happens inside the command
that needs it, so ``pbtkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pbtkit._exceptions import PBTError
from pbtkit._version import __version__
from pbtkit.cli._look import add_status, add_viewing
from pbtkit.cli._serve import add_db, add_serve
from pbtkit.cli._train import add_demo, add_replay, add_run, add_worker

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pbtkit", description="Population Based Training: run, inspect and serve populations."
    )
    parser.add_argument("--version", action="version", version=f"pbtkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_run(sub)
    add_status(sub)
    add_demo(sub)
    add_worker(sub)
    add_db(sub)
    add_serve(sub)
    add_viewing(sub)
    add_replay(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pbtkit`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    # pbtkit's own warnings (a server that went away, and came back) as plain lines.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("pbtkit: %(message)s"))
    logging.getLogger("pbtkit").addHandler(handler)
    try:
        return int(args.func(args))
    except PBTError as exc:
        print(f"pbtkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pbtkit: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
