"""The lean front of the hot routes answers every hostile request exactly as FastAPI does.

One app is served twice on 127.0.0.1 over the same store: whole (the lean front of
heartbeat, finish and lease, FastAPI behind it) and as FastAPI alone (``app.fallback``).
Each crafted request (raw bytes on a socket, so headers may repeat and bodies may lie)
goes to both, and the two answers must match byte for byte, beside the status each case
must have. A counter in front of FastAPI proves the ordinary requests were answered by
the lean front and the odd ones by FastAPI.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pbtkit.controller import Lease
from pbtkit.service import RemoteController
from pbtkit.service.server import create_app
from pbtkit.store._base import Measurement
from tests.service.security import KEY, _serving, _spec, _storage

MAX_BODY = 512 * 1024


class _Counting:
    """An ASGI app that counts the requests it passes on to ``app``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)


class _Pair:
    """The URLs of the whole app and of FastAPI alone, and the held trial."""

    def __init__(self, hot: str, plain: str, fallback: _Counting, trial: int) -> None:
        self.hot, self.plain, self.fallback, self.trial = hot, plain, fallback, trial


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Pair]:
    directory = tmp_path_factory.mktemp("hot")
    app = create_app(_storage(directory), directory / "ckpt", auth_key=KEY, max_body=MAX_BODY)
    plain = app.fallback
    counting = _Counting(plain)
    app.fallback = counting
    with _serving(app) as hot_url, _serving(plain) as plain_url:
        with RemoteController(plain_url, KEY, max_outage=0) as remote:
            remote.create("x", _spec(population=2))
            got = remote.lease("x", "w")
            assert isinstance(got, Lease)
        yield _Pair(hot_url, plain_url, counting, got.trial.id)


def _send(url: str, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw request bytes; the status, the headers (lower-case) and the body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


def _request(
    path: str,
    body: bytes | Any,
    headers: list[tuple[str, str]] | None = None,
    *,
    method: str = "POST",
    chunked: bool = False,
    declared_only: bool = False,
) -> bytes:
    """A request with the key and a JSON content type unless ``headers`` says otherwise."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    given = (
        headers
        if headers is not None
        else [("Authorization", f"Bearer {KEY}"), ("Content-Type", "application/json")]
    )
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in given]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        content = f"{len(content):x}\r\n".encode() + content + b"\r\n0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(content)}")
    # declared_only: the length is announced but the body never sent (the limit must
    # refuse it from the header alone).
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if declared_only else content)


def _same(pair: _Pair, raw: bytes, status: int | None) -> tuple[int, bytes]:
    """Send ``raw`` to both; the answers must be the same (and have ``status``)."""
    hot_status, hot_headers, hot_body = _send(pair.hot, raw)
    plain_status, plain_headers, plain_body = _send(pair.plain, raw)
    assert hot_status == plain_status, (hot_status, hot_body[:300], plain_body[:300])
    if status is not None:
        assert hot_status == status, hot_body[:300]
    if hot_status != 200:  # a success may differ (a later lease expiry); an error may not
        assert hot_body == plain_body
        for name in ("content-type", "www-authenticate", "allow"):
            assert hot_headers.get(name) == plain_headers.get(name), name
    return hot_status, hot_body


def _beat(step: int = 0, **extra: Any) -> dict[str, Any]:
    return {"worker_id": "w", "reports": [{"step": step, "metrics": {"score": 1.0}}], **extra}


KEYED = [("Authorization", f"Bearer {KEY}")]
JSON = [("Content-Type", "application/json")]


def test_an_ordinary_heartbeat_is_answered_by_the_front_alone(pair: _Pair) -> None:
    before = pair.fallback.calls
    _, body = _same(pair, _request(f"/v1/trials/{pair.trial}/heartbeat", _beat()), 200)
    assert json.loads(body)["lease_expires"] > 0
    assert pair.fallback.calls == before  # the whole app never reached FastAPI


#: Headers, the status both must answer, and whether FastAPI answers it (else the front).
KEYS = {
    "no key": ([*JSON], 401, True),
    "wrong key": ([("Authorization", "Bearer nope"), *JSON], 401, True),
    "key with a tail": ([("Authorization", f"Bearer {KEY}x"), *JSON], 401, True),
    "another scheme": ([("Authorization", f"Basic {KEY}"), *JSON], 401, True),
    "wrong key first, right key second": (
        [("Authorization", "Bearer nope"), *KEYED, *JSON],
        401,
        True,
    ),
    "right key first, wrong key second": (
        [*KEYED, ("Authorization", "Bearer nope"), *JSON],
        200,
        True,
    ),
    "lower-case scheme": ([("Authorization", f"bearer {KEY}"), *JSON], 200, False),
    "text first, JSON second": ([*KEYED, ("Content-Type", "text/plain"), *JSON], 422, True),
    "text": ([*KEYED, ("Content-Type", "text/plain")], 422, True),
    "no content type": (KEYED, 422, True),
    "JSON with a charset": (
        [*KEYED, ("Content-Type", "application/json; charset=utf-8")],
        200,
        True,
    ),
}


@pytest.mark.parametrize("case", sorted(KEYS))
def test_keys_and_headers_get_fastapis_answer(pair: _Pair, case: str) -> None:
    headers, status, by_fastapi = KEYS[case]
    before = pair.fallback.calls
    _same(pair, _request(f"/v1/trials/{pair.trial}/heartbeat", _beat(), headers), status)
    assert pair.fallback.calls == before + by_fastapi


LONG = "n" * 300
BODIES: dict[str, tuple[bytes | Any, int | None]] = {
    "not JSON": (b'{"worker_id": ', 422),
    "empty": (b"", 422),
    "NaN literal": (b'{"worker_id":"w","reports":[{"step":0,"metrics":{"score":NaN}}]}', 422),
    "Infinity literal": (
        b'{"worker_id":"w","reports":[{"step":0,"metrics":{"score":-Infinity}}]}',
        422,
    ),
    "a number too large for a double": (
        b'{"worker_id":"w","reports":[{"step":0,"metrics":{"score":1e400}}]}',
        422,
    ),
    "a step beyond int64": (_beat(2**64), 422),
    "a negative step": (_beat(-1), 422),
    "an empty metric name": (
        {"worker_id": "w", "reports": [{"step": 0, "metrics": {"": 1.0}}]},
        422,
    ),
    "a metric name too long": (
        {"worker_id": "w", "reports": [{"step": 0, "metrics": {LONG: 1.0}}]},
        422,
    ),
    "a metric that is an object": (
        {"worker_id": "w", "reports": [{"step": 0, "metrics": {"score": {"a": 1}}}]},
        422,
    ),
    "an unknown field deep inside": (
        {"worker_id": "w", "reports": [{"step": 0, "metrics": {"score": 1}, "member": 3}]},
        422,
    ),
    "an unknown field on top": (_beat(colour="red"), 422),
    "a worker id too long": ({"worker_id": LONG, "reports": []}, 422),
    "a lone surrogate": (b'{"worker_id":"\\ud800","reports":[]}', 422),
    "a lone surrogate in a metric name": (
        b'{"worker_id":"w","reports":[{"step":0,"metrics":{"\\udc00":1}}]}',
        422,
    ),
    "bytes that are not UTF-8": (b'{"worker_id":"\xff\xfe","reports":[]}', None),
    "nested a hundred thousand deep": (b"[" * 100_000 + b"]" * 100_000, None),
    "too many reports": (
        {"worker_id": "w", "reports": [{"step": 0, "metrics": {"s": 1}}] * 10_001},
        422,
    ),
    "a negative seq": (_beat(seq=-1), 422),
    "a seq beyond int64": (_beat(seq=2**63), 422),
    "again that is not a boolean": (_beat(again="yes"), 422),
    "a list": ([1, 2], 422),
    "null": (b"null", 422),
    "another worker's trial": ({"worker_id": "v", "reports": []}, 409),
}


@pytest.mark.parametrize("case", sorted(BODIES))
def test_malformed_and_hostile_heartbeats_get_fastapis_answer(pair: _Pair, case: str) -> None:
    body, status = BODIES[case]
    got, _ = _same(pair, _request(f"/v1/trials/{pair.trial}/heartbeat", body), status)
    assert got >= 400


def test_a_body_over_the_limit_gets_fastapis_answer(pair: _Pair) -> None:
    body = _beat() | {"pad": "x" * MAX_BODY}
    path = f"/v1/trials/{pair.trial}/heartbeat"
    status, _ = _same(pair, _request(path, body, declared_only=True), 413)
    assert status == 413


@pytest.mark.parametrize(
    "trial", ["0", "007", "-1", str(2**63), "99999999999999999999", "abc", "1e3", "999999"]
)
def test_odd_trial_ids_get_fastapis_answer(pair: _Pair, trial: str) -> None:
    status, _ = _same(pair, _request(f"/v1/trials/{trial}/heartbeat", _beat()), None)
    assert status in (404, 409, 422)


@pytest.mark.parametrize(
    ("checkpoint", "status"),
    [("../escape", 400), ("/etc", 400), ("a/../../b", 400), ("", 422), ("x" * 5000, 422)],
)
def test_finish_paths_outside_the_root_get_fastapis_answer(
    pair: _Pair, checkpoint: str, status: int
) -> None:
    body = {"worker_id": "w", "reports": [], "checkpoint": checkpoint}
    got, _ = _same(pair, _request(f"/v1/trials/{pair.trial}/finish", body), status)
    assert got == status


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/experiments/nope/lease", {"worker_id": "w2"}, 404),
        (f"/v1/experiments/{LONG}/lease", {"worker_id": "w2"}, 422),
        ("/v1/experiments/x%2Fy/lease", {"worker_id": "w2"}, None),
        ("/v1/experiments/x/lease", {"worker_id": "w2", "member": -1}, 422),
        ("/v1/experiments/x/lease", {"worker_id": "w2", "member": 2**63}, 422),
        ("/v1/experiments/x/lease", {"worker_id": ""}, 422),
        ("/v1/lease", {"worker_id": "w2", "again": 1.5}, 422),
        ("/v1/lease/", {"worker_id": "w2"}, None),
    ],
)
def test_hostile_leases_get_fastapis_answer(
    pair: _Pair, path: str, body: Any, status: int | None
) -> None:
    got, _ = _same(pair, _request(path, body), status)
    assert got != 200


def test_a_chunked_body_and_a_get_get_fastapis_answer(pair: _Pair) -> None:
    path = f"/v1/trials/{pair.trial}/heartbeat"
    chunked, _ = _same(pair, _request(path, _beat(), chunked=True), 200)
    get, _ = _same(pair, _request(path, b"", KEYED, method="GET"), 405)
    assert (chunked, get) == (200, 405)


def test_a_heartbeat_sent_again_stores_no_report_twice(tmp_path: Path) -> None:
    app = create_app(_storage(tmp_path), tmp_path / "ckpt", auth_key=KEY)
    with _serving(app) as url, RemoteController(url, KEY, max_outage=0) as remote:
        remote.create("x", _spec())
        got = remote.lease("x", "w")
        assert isinstance(got, Lease)
        path = f"/v1/trials/{got.trial.id}/heartbeat"
        first = [{"step": s, "metrics": {"score": float(s)}} for s in range(3)]
        more = [{"step": s, "metrics": {"score": float(s)}} for s in range(3, 5)]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
            sent = [
                {"worker_id": "w", "reports": first, "seq": 0},
                {"worker_id": "w", "reports": first, "seq": 0, "again": True},
                {"worker_id": "w", "reports": first + more, "seq": 0, "again": True},
                {"worker_id": "w", "reports": more, "seq": 3, "again": True},
            ]
            for body in sent:
                assert http.post(path, json=body).status_code == 200
        steps = [r.step for r in remote.reports("x")]
    assert steps == [0, 1, 2, 3, 4]


class _LosesFirstAnswer(httpx.HTTPTransport):
    """Delivers every request, but loses the answer to the first heartbeat."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path.endswith("/heartbeat") and not self.lost:
            response.read()
            self.lost += 1
            raise httpx.ReadError("connection reset after the server answered", request=request)
        return response


def test_a_client_whose_answer_was_lost_sends_again_without_duplicates(tmp_path: Path) -> None:
    app = create_app(_storage(tmp_path), tmp_path / "ckpt", auth_key=KEY)
    transport = _LosesFirstAnswer()
    with (
        _serving(app) as url,
        RemoteController(url, KEY, max_outage=30, transport=transport) as remote,
    ):
        remote.create("x", _spec())
        got = remote.lease("x", "w")
        assert isinstance(got, Lease)
        trial = got.trial.id
        remote.heartbeat(trial, "w", [Measurement(0, {"score": 0.0}), Measurement(1, {"s": 1})])
        remote.heartbeat(trial, "w", [Measurement(2, {"score": 2.0})])
        steps = [r.step for r in remote.reports("x")]
    assert transport.lost == 1
    assert steps == [0, 1, 2]


@pytest.mark.parametrize("case", sorted(BODIES))
def test_malformed_and_hostile_finishes_with_a_lease_get_fastapis_answer(
    pair: _Pair, case: str
) -> None:
    body, status = BODIES[case]
    got, _ = _same(pair, _request(f"/v1/trials/{pair.trial}/finish-and-lease", body), status)
    assert got >= 400


def test_an_ordinary_finish_with_a_lease_is_answered_by_the_front_alone(tmp_path: Path) -> None:
    app = create_app(_storage(tmp_path), tmp_path / "ckpt", auth_key=KEY)
    counting = _Counting(app.fallback)
    app.fallback = counting
    with _serving(app) as url, RemoteController(url, KEY, max_outage=0) as remote:
        remote.create("x", _spec(population=2))
        got = remote.lease("x", "w")
        assert isinstance(got, Lease)
        before = counting.calls
        reports = [Measurement(0, {"score": 1.0})]
        released, ahead = remote.finish_and_lease(got.trial.id, "w", reports)
        assert counting.calls == before
        assert released == []
        assert ahead is not None
        assert remote.trial(got.trial.id).status == "done"
