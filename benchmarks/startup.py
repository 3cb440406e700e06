"""Start-up cost: ``import pbtkit``, ``pbtkit --help`` and a first store, beside their floor.

Each figure is the wall time of a whole fresh process, measured from outside, interleaved
with the floor (a bare ``python -c pass``) so that both see the same load. With several
``--src`` folders (this checkout and an older one, say) every round runs each of them in
turn, so they are compared side by side. One JSON line per (source, command): the median,
the spread and the median of the floor of the same rounds.

Usage: python benchmarks/startup.py [--repeats 5] [--src src --src /old/checkout/src]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "import pbtkit": ["-c", "import pbtkit"],
    "pbtkit --help": ["-m", "pbtkit", "--help"],
    # A new SQLite store, as a run's driver and each worker open it.
    "open a new store": [
        "-c",
        "import sys\nfrom pbtkit.store import open_store\nopen_store(sys.argv[1]).close()",
    ],
}


def _wall(args: list[str], src: Path, tmp: Path, index: int) -> float:
    extra = [f"sqlite:///{tmp / f'new-{index}.db'}"] if args[-1].endswith(".close()") else []
    env = {**os.environ, "PYTHONPATH": str(src)}
    started = time.perf_counter()
    subprocess.run([sys.executable, *args, *extra], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--src", action="append", type=Path, help="a src/ folder (repeatable)")
    args = parser.parse_args()
    sources = [src.resolve() for src in args.src or [ROOT / "src"]]
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        index = 0
        for _ in range(args.repeats):
            for src in sources:
                for name, command in COMMANDS.items():
                    index += 1
                    times.setdefault((str(src), name), []).append(_wall(command, src, tmp, index))
    for src in sources:
        floor = statistics.median(times[(str(src), "python -c pass")])
        for name in COMMANDS:
            values = times[(str(src), name)]
            print(
                json.dumps(
                    {
                        "benchmark": "startup",
                        "src": str(src),
                        "command": name,
                        "median_s": round(statistics.median(values), 4),
                        "min_s": round(min(values), 4),
                        "max_s": round(max(values), 4),
                        "floor_median_s": round(floor, 4),
                        "repeats": len(values),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
