"""Throughput of ``pbtkit serve`` over HTTP on loopback (docs/benchmarks.md, item 2).

A real ``pbtkit serve`` runs as a subprocess on 127.0.0.1 (a free port, a fresh SQLite
file and checkpoint root in a temporary directory, an auth key). For each run of a level a
new experiment with one member per client is created through ``RemoteController.create``
(one Uniform hyperparameter, ready_every so large that no trial ends); every simulated
client (its own keep-alive connection, all in one asyncio loop) leases its own trial,
warms up, then sends heartbeats each carrying ``reports_per_request`` reports and times
each request with ``time.perf_counter``. Levels: 16 and 64 clients with ONE report per
request (a training loop flushing every step: what "reports per second" means, as in Ray
Tune's ~500 results/s), and 16 clients with ten reports per request (workers flush their
reports in batches with the heartbeat). Every phase stops by itself after a fixed number
of requests or ``--max-seconds``, whichever comes first. A first line measures ``GET
/health`` with the same 16 clients: the floor of HTTP stack plus load generator.

One JSON line per level gives the medians over ``--repeats`` runs of reports per second
(acknowledged reports / wall time of the measured phase), p50 and p99 request latency,
and the CPU milliseconds the server and this load generator each spent per request. The
load generator runs on the same machine and shares its cores with the server. After each
run, ``GET /v1/experiments/{name}/reports`` must return exactly the acknowledged reports
(warm-up included): ``stored_ok``.

``--client httpx`` (the default) uses one ``httpx.AsyncClient`` per simulated client;
httpx spends about 1-1.5 ms of CPU per request, as much as the server, so on a 2-core
machine it caps what can be measured. ``--client raw`` (a minimal HTTP/1.1 client on
asyncio streams, ~0.1 ms per request) measures the server itself; give both to compare.

Usage: python benchmarks/service.py [--repeats 3] [--quick] [--client httpx --client raw]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import pbtkit as pk
from pbtkit.core.fitness import Objective
from pbtkit.service.client import RemoteController
from pbtkit.spec import ExperimentSpec

LEVELS: tuple[tuple[int, int], ...] = ((16, 1), (64, 1), (16, 10))  # (clients, reports/request)
NEVER = 10**9  # ready_every and total_steps: no trial ends during the benchmark


# the server ----------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``pbtkit serve`` in a subprocess, on a fresh SQLite file in ``tmp``."""

    def __init__(self, tmp: Path, startup_s: float = 60.0) -> None:
        self.port = free_port()
        self.key = secrets.token_urlsafe(24)
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_path = tmp / "server.log"
        self._log = self._log_path.open("wb")
        command = [
            sys.executable,
            "-m",
            "pbtkit",
            "serve",
            "--storage",
            f"sqlite:///{tmp / 'pbt.db'}",
            "--checkpoint-root",
            str(tmp / "ckpt"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--auth-key",
            self.key,
        ]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + startup_s
        while True:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"pbtkit serve exited at start:\n{self.log_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"pbtkit serve did not answer /health:\n{self.log_text()}")
            time.sleep(0.05)

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds the server process has used (Linux), else None."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_text(self) -> str:
        self._log.flush()
        return self._log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """Terminate, then kill if it does not stop within 10 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


# the load ------------------------------------------------------------------------------
def spec(population: int, root: Path) -> ExperimentSpec:
    """One Uniform, ready_every and total_steps so large that no trial ends."""
    return ExperimentSpec(
        space=pk.SearchSpace({"x": pk.Uniform(0.0, 1.0)}),
        policy=pk.PBT(Objective("loss", "min"), ready_every=NEVER, total_steps=NEVER),
        population=population,
        checkpoint_root=str(root),
    )


@dataclass
class Tally:
    """What one phase of one client saw."""

    latencies: list[float] = field(default_factory=list)
    acknowledged: int = 0  # requests answered 200
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)


class HttpxConnection:
    """One ``httpx.AsyncClient`` holding one keep-alive connection (the default client)."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=60.0,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else None
        response = await self.http.request(method, path, content=body, headers=headers)
        return response.status_code, response.content

    async def close(self) -> None:
        await self.http.aclose()


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams (``--client raw``).

    httpx spends about as much CPU per request as the server does; on a small machine
    the load generator then competes with the server for the same cores. This client
    costs a small fraction of that, to measure the server rather than httpx.
    """

    def __init__(self, url: str, key: str) -> None:
        host_port = url.removeprefix("http://")
        self.host, _, port = host_port.partition(":")
        self.port = int(port)
        self.head = f"Host: {host_port}\r\nAuthorization: Bearer {key}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        extra = ""
        if body is not None:
            extra = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        request = f"{method} {path} HTTP/1.1\r\n{self.head}{extra}\r\n".encode()
        self.writer.write(request + body if body is not None else request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "transfer-encoding":
                raise RuntimeError("the raw client does not read chunked responses")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


Connection = HttpxConnection | RawConnection
CLIENTS: dict[str, type[HttpxConnection] | type[RawConnection]] = {
    "httpx": HttpxConnection,
    "raw": RawConnection,
}


class SimClient:
    """One simulated worker: its own connection, its own leased trial."""

    def __init__(self, conn: Connection, index: int, reports_per_request: int) -> None:
        self.conn = conn
        self.worker_id = f"bench-{index}"
        self.index = index
        self.per_request = reports_per_request
        self.trial_id = -1
        self.step = 0

    async def lease(self, experiment: str) -> None:
        body = json.dumps({"worker_id": self.worker_id}).encode()
        status, content = await self.conn.request(
            "POST", f"/v1/experiments/{experiment}/lease", body
        )
        reply = json.loads(content)
        if status != 200 or reply["status"] != "leased":
            raise RuntimeError(f"client {self.index} got no trial: {status} {reply}")
        self.trial_id = int(reply["lease"]["trial"]["id"])

    def _heartbeat(self) -> tuple[str, str, bytes | None]:
        reports = []
        for _ in range(self.per_request):
            reports.append({"step": self.step, "metrics": {"loss": 1.0 / (1 + self.step)}})
            self.step += 1
        body = json.dumps({"worker_id": self.worker_id, "reports": reports}).encode()
        return "POST", f"/v1/trials/{self.trial_id}/heartbeat", body

    async def run(self, count: int, deadline: float, *, health: bool = False) -> Tally:
        """Send ``count`` heartbeats (or ``GET /health`` when ``health``) until ``deadline``."""
        tally = Tally()
        for _ in range(count):
            if time.perf_counter() > deadline:
                break
            method, path, body = ("GET", "/health", None) if health else self._heartbeat()
            started = time.perf_counter()
            try:
                status, content = await self.conn.request(method, path, body)
            except (httpx.HTTPError, OSError, asyncio.IncompleteReadError) as exc:
                tally.errors += 1
                if len(tally.error_samples) < 3:
                    tally.error_samples.append(repr(exc))
                continue
            tally.latencies.append(time.perf_counter() - started)
            if status == 200:
                tally.acknowledged += 1
            else:
                tally.errors += 1
                if len(tally.error_samples) < 3:
                    tally.error_samples.append(f"{status}: {content[:200]!r}")
        return tally


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0..1) of sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


async def load(
    server: Server,
    experiment: str | None,
    clients: int,
    per_request: int,
    *,
    client: str,
    warmup: int,
    requests: int,
    max_seconds: float,
) -> dict[str, Any]:
    """One run: lease, warm up, measure, check what was stored (``experiment`` None:
    ``GET /health`` instead of heartbeats, the floor of the HTTP stack)."""
    factory = CLIENTS[client]
    sims = [SimClient(factory(server.url, server.key), i, per_request) for i in range(clients)]
    health = experiment is None
    try:
        if experiment is not None:
            for sim in sims:  # one after another: each takes a distinct pending trial
                await sim.lease(experiment)
            if len({sim.trial_id for sim in sims}) != clients:
                raise RuntimeError("two clients leased the same trial")
        deadline = time.perf_counter() + max_seconds
        each = max(1, warmup // clients)
        warm = await asyncio.gather(*(sim.run(each, deadline, health=health) for sim in sims))

        each = max(1, requests // clients)
        cpu_server = server.cpu_seconds()
        cpu_client = time.process_time()
        started = time.perf_counter()
        deadline = started + max_seconds
        tallies = await asyncio.gather(*(sim.run(each, deadline, health=health) for sim in sims))
        wall = time.perf_counter() - started
        cpu_client = time.process_time() - cpu_client
        cpu_server_after = server.cpu_seconds()

        acknowledged = sum(t.acknowledged for t in tallies)
        stored = stored_expected = 0
        if experiment is not None:
            stored_expected = (acknowledged + sum(t.acknowledged for t in warm)) * per_request
            status, content = await sims[0].conn.request(
                "GET", f"/v1/experiments/{experiment}/reports"
            )
            if status != 200:
                raise RuntimeError(f"GET reports answered {status}: {content[:200]!r}")
            stored = len(json.loads(content))
    finally:
        await asyncio.gather(*(sim.conn.close() for sim in sims))

    latencies = sorted(x for t in tallies for x in t.latencies)
    sent = len(latencies) + sum(t.errors for t in tallies)
    server_cpu = (
        None if cpu_server is None or cpu_server_after is None else cpu_server_after - cpu_server
    )
    return {
        "requests": sent,
        "wall_s": wall,
        "requests_per_s": acknowledged / wall,
        "reports_per_s": acknowledged * per_request / wall,
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "max_ms": 1000 * latencies[-1] if latencies else float("nan"),
        "errors": sum(t.errors for t in tallies) + sum(t.errors for t in warm),
        "error_samples": [s for t in (*warm, *tallies) for s in t.error_samples][:3],
        "stored_ok": stored == stored_expected,
        "stored": stored,
        "stored_expected": stored_expected,
        "server_cpu_ms_per_request": None if server_cpu is None else 1000 * server_cpu / sent,
        "client_cpu_ms_per_request": 1000 * cpu_client / sent,
        "server_cpu_share": None if server_cpu is None else server_cpu / wall,
    }


def measure(
    server: Server,
    root: Path,
    clients: int,
    per_request: int,
    *,
    client: str,
    repeats: int,
    warmup: int,
    requests: int,
    max_seconds: float,
    health: bool = False,
) -> None:
    """Run one level ``repeats`` times and print its JSON line (medians over the runs)."""
    runs = []
    for repeat in range(repeats):
        name = None
        if not health:
            name = f"bench-{client}-c{clients}-r{per_request}-{repeat}"
            with RemoteController(server.url, server.key) as remote:
                remote.create(name, spec(clients, root))
        runs.append(
            asyncio.run(
                load(
                    server,
                    name,
                    clients,
                    per_request,
                    client=client,
                    warmup=warmup,
                    requests=requests,
                    max_seconds=max_seconds,
                )
            )
        )

    def med(key: str, digits: int) -> float | None:
        values = [r[key] for r in runs if r[key] is not None]
        return round(statistics.median(values), digits) if values else None

    line: dict[str, Any] = {"benchmark": "service_health_floor" if health else "service_reports"}
    line["clients"] = clients
    if not health:
        line["reports_per_request"] = per_request
    line |= {
        "requests": int(statistics.median(r["requests"] for r in runs)),
        "reports_per_s": None if health else med("reports_per_s", 1),
        "requests_per_s": med("requests_per_s", 1),
        "p50_ms": med("p50_ms", 2),
        "p99_ms": med("p99_ms", 2),
        "max_ms": med("max_ms", 1),
        "errors": sum(r["errors"] for r in runs),
        "stored_ok": None if health else all(r["stored_ok"] for r in runs),
        "repeats": repeats,
        "runs_per_s": [round(r["requests_per_s" if health else "reports_per_s"]) for r in runs],
        "server_cpu_ms_per_request": med("server_cpu_ms_per_request", 3),
        "client_cpu_ms_per_request": med("client_cpu_ms_per_request", 3),
        "server_cpu_share": med("server_cpu_share", 2),
        "client": client,
        "cores": os.cpu_count(),
    }
    if health:
        del line["reports_per_s"], line["stored_ok"]
    samples = [s for r in runs for s in r["error_samples"]]
    if samples:
        line["error_samples"] = samples[:3]
    if not health and not line["stored_ok"]:
        line["stored"] = [(r["stored"], r["stored_expected"]) for r in runs]
    print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer requests, one repeat")
    parser.add_argument(
        "--requests", type=int, default=3000, help="measured requests per level and run"
    )
    parser.add_argument("--warmup", type=int, default=320, help="unmeasured requests first")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="time limit per phase")
    parser.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        action="append",
        help="load generator: httpx (default) and/or raw (a minimal HTTP/1.1 client)",
    )
    parser.add_argument(
        "--no-floor", action="store_true", help="skip GET /health (the HTTP stack's floor)"
    )
    args = parser.parse_args()
    repeats, requests, warmup = args.repeats, args.requests, args.warmup
    if args.quick:
        repeats, requests, warmup = 1, min(requests, 1000), min(warmup, 128)
    settings = {"repeats": repeats, "warmup": warmup, "requests": requests}
    with tempfile.TemporaryDirectory(prefix="pbtkit-bench-") as tmp:
        root = Path(tmp) / "ckpt"
        server = Server(Path(tmp))
        try:
            for client in args.client or ["httpx"]:
                if not args.no_floor:
                    measure(
                        server,
                        root,
                        16,
                        1,
                        client=client,
                        max_seconds=args.max_seconds,
                        health=True,
                        **settings,
                    )
                for clients, per_request in LEVELS:
                    measure(
                        server,
                        root,
                        clients,
                        per_request,
                        client=client,
                        max_seconds=args.max_seconds,
                        **settings,
                    )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
