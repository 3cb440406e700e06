"""Reports over HTTP, one per request and batched by the worker, beside ``GET /health``.

One real ``pbtkit serve`` process (SQLite, an auth key) on 127.0.0.1; each repeat runs,
one after another on the same server (A, B, C, A, B, C, ...):

- ``health``: 16 clients send ``GET /health`` (a no-op answered by the whole FastAPI
  stack): the floor of the server's CPU per request.
- ``unbatched``: 16 clients each hold a trial and send heartbeats carrying ONE report
  each, every request waiting for its answer (a loop flushing every step).
- ``batched``: 16 real workers (``run_worker`` threads with a ``RemoteController``)
  train one trial each and report EVERY step at a paced rate (``--rate`` reports/s in
  all); the worker holds its reports and sends them in batches (every
  ``report_interval`` seconds or ``report_batch`` reports, the rest with the finish).
  Each report's latency is from ``trial.report`` to the answer of the request that
  stored it (an answer means committed).

The clients of ``health`` and ``unbatched`` are minimal keep-alive HTTP/1.1 clients on
asyncio (``service.py --client raw``), so that the server, not the client, is measured.
One JSON line per kind, medians over ``--repeats``: reports/s, p50/p99 latency, the
server's CPU milliseconds per request (from /proc) and, for the reports, that CPU as a
ratio of ``/health``'s measured in the same repeat; every report is checked stored once.

Usage: python benchmarks/report_batches.py [--repeats 3] [--seconds 8] [--rate 12000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# The server, the raw client and the spec are the sibling benchmark's (service.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pbtkit.service.client import RemoteController
from pbtkit.worker import Trial, run_worker
from service import Server, load, spec

CLIENTS = 16


class TimedRemote(RemoteController):
    """A RemoteController that notes when each batch of reports was acknowledged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per trial: (answered at, reports carried, whether it was the finish).
        self.acks: dict[int, list[tuple[float, int, bool]]] = {}
        self.requests = 0
        self.durations: list[float] = []
        self._acks_lock = threading.Lock()

    def _ack(self, trial_id: int, count: int, sent_at: float, finish: bool = False) -> None:
        now = time.perf_counter()
        with self._acks_lock:
            self.acks.setdefault(trial_id, []).append((now, count, finish))
            self.requests += 1
            self.durations.append(now - sent_at)

    def heartbeat(self, trial_id: int, worker_id: str, reports: Any = ()) -> float:  # type: ignore[override]
        sent_at = time.perf_counter()
        expires = super().heartbeat(trial_id, worker_id, reports)
        self._ack(trial_id, len(reports), sent_at)
        return expires

    def finish(
        self,
        trial_id: int,
        worker_id: str,
        reports: Any = (),
        checkpoint: str | None = None,
    ) -> list[str]:
        sent_at = time.perf_counter()
        released = super().finish(trial_id, worker_id, reports, checkpoint)
        self._ack(trial_id, len(reports), sent_at, finish=True)
        return released


def batched(server: Server, root: Path, name: str, seconds: float, rate: float) -> dict[str, Any]:
    """16 workers report every step for ``seconds`` at ``rate`` reports/s in all."""
    with RemoteController(server.url, server.key) as admin:
        admin.create(name, spec(CLIENTS, root))
    per_worker = rate / CLIENTS
    made: dict[int, list[float]] = {}
    start = threading.Barrier(CLIENTS + 1, timeout=300)
    remotes = [TimedRemote(server.url, server.key) for _ in range(CLIENTS)]

    def train(trial: Trial) -> None:
        times: list[float] = []
        made[trial.trial_id] = times
        start.wait()
        began = time.perf_counter()
        step = trial.start_step
        while (now := time.perf_counter()) - began < seconds:
            due = int((now - began) * per_worker) - len(times)
            for _ in range(due):
                times.append(time.perf_counter())
                trial.report(step, loss=1.0 / (1 + step))
                step += 1
            time.sleep(0.01)  # "training": the rest of the step (several steps per wake)

    cpu_before = server.cpu_seconds()
    threads = [
        threading.Thread(
            target=run_worker,
            args=(remotes[i], name, train, f"bench-{i}"),
            kwargs={"max_trials": 1},
        )
        for i in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    cpu_after = server.cpu_seconds()

    latencies: list[float] = []
    by_heartbeat: list[float] = []  # the reports sent while training, not with the finish
    for remote in remotes:
        for trial_id, acks in remote.acks.items():
            times = made[trial_id]
            index = 0
            for acked_at, count, finish in acks:
                waited = [acked_at - t for t in times[index : index + count]]
                latencies.extend(waited)
                if not finish:
                    by_heartbeat.extend(waited)
                index += count
            if index != len(times):
                raise RuntimeError(f"trial {trial_id}: {len(times)} made, {index} acknowledged")
    requests = sum(r.requests for r in remotes)
    durations = sorted(d for r in remotes for d in r.durations)
    for remote in remotes:
        remote.close()
    with RemoteController(server.url, server.key) as admin:
        stored = len(admin.reports(name))
    latencies.sort()
    by_heartbeat.sort()
    server_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return {
        "reports_per_s": len(latencies) / wall,
        "requests_per_s": requests / wall,
        "reports_per_request": len(latencies) / max(requests, 1),
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "p99_ms_heartbeats": (
            1000 * by_heartbeat[int(0.99 * (len(by_heartbeat) - 1))] if by_heartbeat else None
        ),
        "with_finish": 1 - len(by_heartbeat) / len(latencies),
        "request_p50_ms": 1000 * durations[len(durations) // 2],
        "request_p99_ms": 1000 * durations[int(0.99 * (len(durations) - 1))],
        "stored_ok": stored == len(latencies),
        "server_cpu_ms_per_report": None if server_cpu is None else 1000 * server_cpu / stored,
        "server_cpu_share": None if server_cpu is None else server_cpu / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="reporting time per run")
    parser.add_argument("--rate", type=float, default=12_000, help="batched: reports/s in all")
    parser.add_argument("--requests", type=int, default=3000, help="health/unbatched requests")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"health": [], "unbatched": [], "batched": []}
    settings = {"client": "raw", "warmup": 320, "requests": args.requests, "max_seconds": 30.0}
    with tempfile.TemporaryDirectory(prefix="pbtkit-bench-") as tmp:
        root = Path(tmp) / "ckpt"
        server = Server(Path(tmp))
        try:
            for repeat in range(args.repeats):
                runs["health"].append(asyncio.run(load(server, None, CLIENTS, 1, **settings)))
                name = f"unbatched-{repeat}"
                with RemoteController(server.url, server.key) as admin:
                    admin.create(name, spec(CLIENTS, root))
                runs["unbatched"].append(asyncio.run(load(server, name, CLIENTS, 1, **settings)))
                runs["batched"].append(
                    batched(server, root, f"batched-{repeat}", args.seconds, args.rate)
                )
        finally:
            server.stop()

    def med(kind: str, key: str) -> float | None:
        values = [r[key] for r in runs[kind] if r.get(key) is not None]
        return round(statistics.median(values), 3) if values else None

    floors = [r["server_cpu_ms_per_request"] for r in runs["health"]]
    ratios = [
        r["server_cpu_ms_per_request"] / floor
        for r, floor in zip(runs["unbatched"], floors, strict=True)
        if r["server_cpu_ms_per_request"] is not None and floor
    ]
    machine = {"cores": os.cpu_count(), "machine": platform.machine(), "repeats": args.repeats}
    print(
        json.dumps(
            {
                "benchmark": "report_batches",
                "kind": "health",
                "clients": CLIENTS,
                "requests_per_s": med("health", "requests_per_s"),
                "p50_ms": med("health", "p50_ms"),
                "p99_ms": med("health", "p99_ms"),
                "server_cpu_ms_per_request": med("health", "server_cpu_ms_per_request"),
                **machine,
            }
        )
    )
    print(
        json.dumps(
            {
                "benchmark": "report_batches",
                "kind": "unbatched",
                "clients": CLIENTS,
                "reports_per_request": 1,
                "reports_per_s": med("unbatched", "reports_per_s"),
                "p50_ms": med("unbatched", "p50_ms"),
                "p99_ms": med("unbatched", "p99_ms"),
                "server_cpu_ms_per_request": med("unbatched", "server_cpu_ms_per_request"),
                "cpu_vs_health": round(statistics.median(ratios), 3) if ratios else None,
                "cpu_vs_health_runs": [round(r, 3) for r in ratios],
                "stored_ok": all(r["stored_ok"] for r in runs["unbatched"]),
                **machine,
            }
        )
    )
    print(
        json.dumps(
            {
                "benchmark": "report_batches",
                "kind": "batched",
                "workers": CLIENTS,
                "offered_reports_per_s": args.rate,
                "reports_per_s": med("batched", "reports_per_s"),
                "runs_reports_per_s": [round(r["reports_per_s"]) for r in runs["batched"]],
                "requests_per_s": med("batched", "requests_per_s"),
                "reports_per_request": med("batched", "reports_per_request"),
                "p50_ms": med("batched", "p50_ms"),
                "p99_ms": med("batched", "p99_ms"),
                "runs_p99_ms": [round(r["p99_ms"], 1) for r in runs["batched"]],
                "p99_ms_heartbeats": med("batched", "p99_ms_heartbeats"),
                "share_sent_with_finish": med("batched", "with_finish"),
                "request_p50_ms": med("batched", "request_p50_ms"),
                "request_p99_ms": med("batched", "request_p99_ms"),
                "server_cpu_ms_per_report": med("batched", "server_cpu_ms_per_report"),
                "server_cpu_share": med("batched", "server_cpu_share"),
                "stored_ok": all(r["stored_ok"] for r in runs["batched"]),
                **machine,
            }
        )
    )


if __name__ == "__main__":
    main()
