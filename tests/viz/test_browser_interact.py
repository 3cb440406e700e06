"""What a person does with the dashboard, in a real headless Chromium: hover a curve and
read the values, sort and filter the members, open the exploit log and the best
member's lineage schedule. Each test keeps a screenshot (see the ``screenshots`` fixture).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

import pbtkit as pk
from pbtkit.service import PBTServer
from tests import trainers
from tests.viz.test_browser import KEY, _until, console_errors

POPULATION = 6
TOTAL_STEPS = 20


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("interact")


@pytest.fixture(scope="module")
def finished(directory: Path) -> pk.Result:
    """A finished run with exploits, a log-uniform and a categorical hyperparameter."""
    return pk.run(
        trainers.climb,
        space={
            "x": pk.Uniform(0.1, 1.0),
            "lr": pk.LogUniform(1e-4, 1e-1),
            "act": pk.Choice(["relu", "tanh", "gelu"]),
        },
        metric="score",
        population=POPULATION,
        workers=2,
        ready_every=4,
        total_steps=TOTAL_STEPS,
        evolution="generational",
        exploit=pk.Truncation(0.34),
        executor="thread",
        storage=f"sqlite:///{directory / 'run.db'}",
        checkpoint_dir=directory / "ckpt",
        name="interact",
        progress=False,
        tensorboard=False,
        seed=1,
    )


@pytest.fixture
def page(browser: Any, finished: pk.Result, directory: Path) -> Iterator[Any]:
    """The dashboard of the finished run, signed in, drawn."""
    storage = f"sqlite:///{directory / 'run.db'}"
    root = finished.spec.checkpoint_root
    with PBTServer(0, KEY, storage=storage, checkpoint_root=root) as server:
        browser.get(f"{server.url}/dashboard?{urlencode({'key': KEY, 'experiment': 'interact'})}")
        _until(
            browser,
            "the finished run",
            lambda b: (
                b.find_element(By.TAG_NAME, "body").get_attribute("data-status") == "finished"
            ),
        )
        _until(browser, "the curves", lambda b: b.find_elements(By.CSS_SELECTOR, "#curves .u-over"))
        yield browser
        assert not console_errors(browser)


def _tooltip(browser: Any, chart: Any, dx: int, dy: int = 0) -> list[str]:
    """Move the mouse to ``dx`` pixels right of the chart's centre; the readout's lines."""
    over = chart.find_element(By.CSS_SELECTOR, ".u-over")
    ActionChains(browser).move_to_element_with_offset(over, dx, dy).perform()
    box = _until(
        browser,
        "the readout",
        lambda b: (t := chart.find_element(By.CSS_SELECTOR, ".u-tooltip")).is_displayed() and t,
    )
    return [line.text for line in box.find_elements(By.CSS_SELECTOR, "div")]


def _number(text: str) -> float:
    return float(text.replace("\u2212", "-"))


def test_hovering_a_curve_reads_out_each_member_at_that_step(
    page: Any, finished: pk.Result, screenshots: Path
) -> None:
    curves = finished.curves()
    chart = page.find_element(By.ID, "curves")
    seen_steps = set()
    for dx in (-200, 0, 200):
        lines = _tooltip(page, chart, dx)
        head = re.fullmatch(r"step (\d+)", lines[0])
        assert head, lines
        step = int(head.group(1))
        seen_steps.add(step)
        members = {}
        for line in lines[1:]:
            found = re.fullmatch(
                r"member (\d+)(?: \(best\))?: (\S+)(?: \(copied member \d+\))?", line
            )
            assert found, line
            members[int(found.group(1))] = _number(found.group(2))
        assert sorted(members) == list(range(POPULATION))  # every member reported here
        for member, value in members.items():
            actual = dict(curves[member])[step]
            assert value == pytest.approx(actual, rel=2e-3, abs=1e-3)
        ordered = list(members.values())
        assert ordered == sorted(ordered, reverse=True)  # the best first ("max")
    assert len(seen_steps) == 3  # the readout followed the mouse
    page.save_screenshot(str(screenshots / "hover-curve.png"))
    # drag to zoom into steps, double-click to see the whole run again
    over = chart.find_element(By.CSS_SELECTOR, ".u-over")
    scale = "return arguments[0].__uplot.scales.x"
    whole = page.execute_script(scale, chart)
    assert (whole["min"], whole["max"]) == (0, TOTAL_STEPS)
    drag = ActionChains(page).move_to_element_with_offset(over, -150, 0).click_and_hold()
    for _ in range(10):
        drag = drag.move_by_offset(20, 0)
    drag.release().perform()
    zoomed = page.execute_script(scale, chart)
    assert 0 < zoomed["min"] < zoomed["max"] < TOTAL_STEPS
    page.save_screenshot(str(screenshots / "zoom-curve.png"))
    ActionChains(page).double_click(over).perform()
    again = page.execute_script(scale, chart)
    assert (again["min"], again["max"]) == (0, TOTAL_STEPS)


def test_log_axes_have_real_ticks_and_the_schedules_read_out(
    page: Any, finished: pk.Result, screenshots: Path
) -> None:
    box = page.find_element(By.CSS_SELECTOR, "[data-chart='schedule:lr'] .plot")
    page.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    labels = page.execute_script("return arguments[0].__uplot.axes[1]._values", box)
    shown = [v for v in labels if v]
    assert len(shown) >= 3, labels  # more than the two ends
    assert len(set(shown)) == len(shown), labels  # no two ticks read the same
    values = sorted(_number(v) for v in shown)
    # decades, or steps inside one: each tick a round number (1, 2, 5 times a power of 10)
    for v in values:
        mantissa = v / 10 ** math.floor(math.log10(v) + 1e-9)
        assert round(mantissa, 6) in {1, 2, 3, 4, 5, 6, 7, 8, 9}, labels
    lines = _tooltip(page, box, 0)
    assert re.fullmatch(r"step \d+: lr", lines[0]), lines
    assert all(re.fullmatch(r"member \d+: \S+", line) for line in lines[1:]), lines
    categories = page.execute_script(
        "return arguments[0].__uplot.axes[1]._values",
        page.find_element(By.CSS_SELECTOR, "[data-chart='schedule:act'] .plot"),
    )
    assert set(filter(None, categories)) <= {"relu", "tanh", "gelu"}
    assert filter(None, categories)
    page.save_screenshot(str(screenshots / "hover-schedule.png"))


def _table(page: Any) -> list[dict[str, str]]:
    rows: list[list[str]] = page.execute_script(
        "return [...document.querySelectorAll('#members tr')].map("
        "r => [...r.children].map(c => c.textContent))"
    )
    head, *body = rows
    return [dict(zip(head, row, strict=True)) for row in body]


def test_the_member_table_sorts_and_filters(
    page: Any, finished: pk.Result, screenshots: Path
) -> None:
    score = page.find_element(By.CSS_SELECTOR, "#members th button[data-key='score']")
    score.click()
    header = page.find_element(By.CSS_SELECTOR, "#members th[aria-sort]")
    assert header.get_attribute("aria-sort") == "descending"  # "max": the best first
    scores = [_number(r["score"]) for r in _table(page)]
    assert scores == sorted(scores, reverse=True)
    assert int(_table(page)[0]["member"]) == finished.best.member
    page.find_element(By.CSS_SELECTOR, "#members th button[data-key='score']").click()
    scores = [_number(r["score"]) for r in _table(page)]
    assert scores == sorted(scores)
    page.find_element(By.CSS_SELECTOR, "#members th button[data-key='hp:x']").click()
    xs = [_number(r["x"]) for r in _table(page)]
    assert xs == sorted(xs)
    # filter: a column comparison, then plain text
    box = page.find_element(By.ID, "member-filter")
    box.send_keys("x>0.5")
    expected = sorted(m.member for m in finished.members if m.hparams["x"] > 0.5)
    assert 0 < len(expected) < POPULATION, "the test needs members on both sides of 0.5"
    assert sorted(int(r["member"]) for r in _table(page)) == expected
    count = page.find_element(By.ID, "members-count").text
    assert count == f"showing {len(expected)} of {POPULATION} members"
    page.save_screenshot(str(screenshots / "members-sorted-filtered.png"))
    box.clear()
    act = finished.best.hparams["act"]
    box.send_keys(act)
    assert sorted(int(r["member"]) for r in _table(page)) == sorted(
        m.member for m in finished.members if m.hparams["act"] == act
    )


def test_the_exploit_log_says_who_copied_whom_and_what_changed(
    page: Any, finished: pk.Result, screenshots: Path
) -> None:
    assert finished.exploits, "the run exploited nothing"
    section = page.find_element(By.ID, "exploits-section")
    assert not section.find_element(By.ID, "exploit-log").is_displayed()
    section.find_element(By.TAG_NAME, "summary").click()
    rows = _until(
        page,
        "the exploit log",
        lambda b: b.find_elements(By.CSS_SELECTOR, "#exploit-log tbody tr[data-trial]"),
    )
    assert len(rows) == len(finished.exploits)
    steps = {t.id: t.start_step for t in finished.trials}
    for e in finished.exploits:
        row = page.find_element(By.CSS_SELECTOR, f"#exploit-log tr[data-trial='{e.trial_id}']")
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        assert cells[:5] == [
            str(steps[e.trial_id]), str(e.member), str(e.donor_member), str(e.donor_trial),
            str(e.trial_id),
        ]  # fmt: skip
        old, new = dict(e.old_hparams or {}), dict(e.new_hparams or {})
        for name in (k for k in new if old.get(k) != new[k]):
            assert f"{name} " in cells[5]
            assert "→" in cells[5]
    page.execute_script("arguments[0].scrollIntoView()", section)
    page.save_screenshot(str(screenshots / "exploit-log.png"))


def test_the_best_lineage_schedule_follows_the_weights_across_members(
    page: Any, finished: pk.Result, screenshots: Path
) -> None:
    schedule = finished.schedule()
    section = page.find_element(By.ID, "lineage-section")
    summary = section.find_element(By.TAG_NAME, "summary")
    assert f"member {finished.best.member}" in summary.text
    summary.click()
    rows = _until(
        page,
        "the lineage",
        lambda b: b.find_elements(By.CSS_SELECTOR, "#lineage-table tbody tr"),
    )
    assert len(rows) == len(schedule.trials)
    for row, trial in zip(rows, schedule.trials, strict=True):
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        assert cells[:3] == [f"{trial.start_step}\u2013{trial.end_step}", str(trial.member),
                             str(trial.trial_id)]  # fmt: skip
        assert _number(cells[3]) == pytest.approx(trial.hparams["x"], rel=2e-3)
        assert cells[5] == trial.hparams["act"]
    assert len({t.member for t in schedule.trials}) > 1, "the lineage never crossed members"
    charts = page.find_elements(By.CSS_SELECTOR, "#lineage-charts [data-chart] canvas")
    assert len(charts) >= 3
    labels = page.execute_script(
        "return arguments[0].__uplot.axes[1]._values",
        page.find_element(By.CSS_SELECTOR, "[data-chart='lineage:lr'] .plot"),
    )
    shown = [v for v in labels if v]
    assert shown, labels
    assert len(set(shown)) == len(shown), labels  # a narrow log range still reads apart
    chart = page.find_element(By.CSS_SELECTOR, "[data-chart='lineage:x'] .plot")
    page.execute_script("arguments[0].scrollIntoView({block: 'center'})", chart)
    lines = _tooltip(page, chart, 0)
    found = re.fullmatch(r"step (\d+): x = (\S+)", lines[0])
    assert found, lines
    step = int(found.group(1))
    segment = next(s for s in schedule.segments if s.start_step <= step < s.end_step)
    assert _number(found.group(2)) == pytest.approx(segment.hparams["x"], rel=2e-3)
    assert re.fullmatch(r"trained by member \d+ \(trial \d+\)", lines[1])
    page.save_screenshot(str(screenshots / "best-lineage.png"))


def test_best_so_far_and_the_scatter_per_hyperparameter(
    page: Any, finished: pk.Result, screenshots: Path
) -> None:
    done = [t for t in finished.trials if t.status == "done"]
    box = page.find_element(By.CSS_SELECTOR, "#best-so-far")
    data = page.execute_script("return arguments[0].__uplot.data", box)
    best, expected = -math.inf, {}
    for t in sorted(done, key=lambda t: (t.end_step, t.id)):
        best = max(best, t.score)
        expected[t.end_step] = best
    assert dict(zip(data[0], data[1], strict=True)) == pytest.approx(expected)
    for name in ("x", "lr", "act"):
        cell = page.find_element(By.CSS_SELECTOR, f"[data-chart='scatter:{name}'] .plot")
        data = page.execute_script("return arguments[0].__uplot.data", cell)
        points = sum(v is not None for series in data[1:] for v in series)
        assert points == len(done)  # a point per finished trial
    cell = page.find_element(By.CSS_SELECTOR, "[data-chart='scatter:x'] .plot")
    page.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
    lines = _tooltip(page, cell, 0)
    assert re.fullmatch(r"x = \S+", lines[0]), lines
    assert re.fullmatch(r"member \d+, trial \d+ \(steps \d+\u2013\d+\): score \S+", lines[1]), lines
    page.save_screenshot(str(screenshots / "scatter.png"))
