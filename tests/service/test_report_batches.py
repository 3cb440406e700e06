"""A remote worker sends its reports in batches: when enough are waiting, when the
interval has passed, and whatever is left with the finish; each report stored once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pbtkit._exceptions import ConfigError
from pbtkit.service import PBTServer, RemoteController
from pbtkit.worker import Trial, run_worker
from tests.service.security import KEY, _spec, _storage


def _stored(url: str) -> int:
    with RemoteController(url, KEY, max_outage=0) as reader:
        return len(reader.reports("x"))


def _wait_for(url: str, count: int, seconds: float = 30.0) -> bool:
    """Whether the server holds ``count`` reports of "x" within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _stored(url) >= count:
            return True
        time.sleep(0.02)
    return False


def _run_one_trial(
    tmp_path: Path, train_reports: int, wait_for: int, **batching: float
) -> tuple[bool, int]:
    """One worker trains one trial, reporting ``train_reports`` times and then waiting
    (at most 30 s) until the server holds ``wait_for`` reports, before it returns.

    Returns whether the reports arrived while it trained, and how many were stored.
    """
    seen = threading.Event()
    with PBTServer(0, KEY, storage=_storage(tmp_path), checkpoint_root=tmp_path / "c") as srv:
        with RemoteController(srv.url, KEY, max_outage=0, **batching) as remote:  # type: ignore[arg-type]
            remote.create("x", _spec())

            def train(trial: Trial) -> None:
                steps = list(trial.steps())
                for i in range(train_reports):
                    trial.report(steps[i % len(steps)], score=float(i))
                if _wait_for(srv.url, wait_for):
                    seen.set()

            assert run_worker(remote, "x", train, "w", max_trials=1) == 1
        return seen.is_set(), _stored(srv.url)


def test_reports_go_when_enough_are_waiting(tmp_path: Path) -> None:
    # The interval is far beyond the wait: only the size can send them while training.
    arrived, stored = _run_one_trial(tmp_path, 25, 20, report_interval=3600, report_batch=10)
    assert arrived
    assert stored == 25  # the last five went with the finish


def test_reports_go_when_the_interval_has_passed(tmp_path: Path) -> None:
    arrived, stored = _run_one_trial(tmp_path, 3, 3, report_interval=0.05, report_batch=1000)
    assert arrived
    assert stored == 3


@pytest.mark.parametrize(
    "bad", [{"report_interval": 0}, {"report_interval": float("inf")}, {"report_batch": 0}]
)
def test_batching_settings_are_checked(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        RemoteController("http://127.0.0.1:1", KEY, **bad)  # type: ignore[arg-type]
