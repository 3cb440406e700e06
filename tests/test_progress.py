"""Progress outside a terminal: plain lines at each tenth, at least every 30 s, and at the end."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pbtkit import progress
from pbtkit.controller import Summary
from pbtkit.core.policy import MAX_STEPS
from tests.helpers import pbtkit_cli
from tests.test_cli import CONFIG


def _summary(done: int, total: int = 100, population: int = 4) -> Summary:
    return Summary(
        name="x",
        status="running",
        population=population,
        steps_done=done,
        steps_total=total,
        best_score=0.5,
        best_member=2,
        exploits=1,
        members_done=0,
        members_failed=0,
        trials_running=1,
        trials_done=done,
    )


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(progress.time, "monotonic", fake)
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False)
    return fake


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("[x]")]


def test_a_plain_line_at_each_tenth_of_the_way(
    clock: _Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    display = progress.ProgressDisplay("x")  # the default shows, even without a terminal
    for done in range(0, 101):
        display.update(_summary(done))
    display.close()
    lines = _lines(capsys)
    assert [re.search(r"(\d+)/100 steps", line).group(1) for line in lines] == [  # type: ignore[union-attr]
        str(10 * k) for k in range(11)
    ]
    assert "best 0.5 (m2), 1 exploits, 0 failed" in lines[-1]


def test_a_line_at_least_every_30_seconds_when_nothing_moves(
    clock: _Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    display = progress.ProgressDisplay("x")
    display.update(_summary(1))
    for _ in range(7):  # 7 looks, 10 s apart, all at step 1 of 100
        clock.now += 10
        display.update(_summary(1))
    lines = _lines(capsys)
    assert len(lines) == 3  # at the start, after 30 s, after 60 s
    assert lines[-1].endswith("60.0s")


def test_the_last_line_says_where_the_run_ended(
    clock: _Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    display = progress.ProgressDisplay("x")
    display.update(_summary(0))
    display.update(_summary(4))  # within the first tenth: not printed yet
    display.close()
    assert "4/100 steps" in _lines(capsys)[-1]


def test_an_open_ended_run_prints_every_30_seconds_with_no_total(
    clock: _Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    total = 4 * MAX_STEPS
    display = progress.ProgressDisplay("x")
    for done in range(0, 50):
        clock.now += 1
        display.update(_summary(done, total))
    lines = _lines(capsys)
    assert len(lines) == 2  # the first look and 30 s later, not a line per step
    assert all("steps (open-ended)" in line for line in lines)


def test_enabled_false_shows_nothing(clock: _Clock, capsys: pytest.CaptureFixture[str]) -> None:
    display = progress.ProgressDisplay("x", enabled=False)
    display.update(_summary(50))
    display.close()
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_pbtkit_run_in_a_pipe_prints_plain_progress(tmp_path: Path) -> None:
    (tmp_path / "pbt.toml").write_text(CONFIG)
    out = pbtkit_cli("run", "tests.trainers:climb", "--config", "pbt.toml", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("[climb]")]
    # a fast machine may finish between two looks, so only the first and the last
    # line are certain; the tenths in between are the unit tests' above
    assert len(lines) >= 2, out.stderr
    assert "0/60 steps" in lines[0]
    assert "60/60 steps" in lines[-1]
