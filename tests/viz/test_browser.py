"""The dashboard in a real headless Chromium: during a run, and against hostile names.

The live test starts `pbtkit serve` on a SQLite file and a run on the same file in this
process, whose trials wait at a gate the test opens; so the browser is shown the run
before any trial, after the first generation, and at its end, and nothing waits on time.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from selenium.common.exceptions import (
    NoAlertPresentException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import pbtkit as pk
from pbtkit.service import PBTServer
from tests.helpers import GatedRun, wait_until_serving
from tests.helpers import free_port as _free_port

ROOT = Path(__file__).resolve().parents[2]
KEY = "browser-secret"
POPULATION = GatedRun.POPULATION
GENERATIONS = GatedRun.GENERATIONS
WAIT = 60  # seconds a condition may take to show before the test fails
NO_SCORE = "\u2013"  # what the table shows for a member without a score yet


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`pbtkit serve` with a key, on a SQLite file; yields its URL and the file."""
    database = tmp_path / "live.db"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PBTKIT_AUTH_KEY"}
    env.update(PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'src'}", PBTKIT_AUTH_KEY=KEY)
    process = subprocess.Popen(
        [sys.executable, "-m", "pbtkit", "serve", "--storage", f"sqlite:///{database}",
         "--checkpoint-root", str(tmp_path / "server-ckpt"), "--port", str(port)],
        env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(url, process, "pbtkit serve")
    try:
        yield url, database
    finally:
        process.terminate()
        process.wait(10)


def _until(browser: Any, what: str, condition: Callable[[Any], Any]) -> Any:
    # The page rebuilds its table and tree at each refresh: an element found just before
    # may be gone when read, which only means "look again".
    wait = WebDriverWait(
        browser, WAIT, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    )
    try:
        return wait.until(condition)
    except TimeoutException as exc:
        raise AssertionError(f"the page never showed {what}: {_page_state(browser)}") from exc


def _page_state(browser: Any) -> str:
    return str(
        browser.execute_script(
            "return [document.getElementById('status').textContent,"
            " document.getElementById('error').textContent,"
            " document.querySelectorAll('#members tbody tr').length,"
            " document.querySelectorAll('#tree circle.node').length]"
        )
    )


def console_errors(browser: Any) -> list[str]:
    """What the page's scripts logged as errors (a failed script, a refused resource)."""
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def _scores(browser: Any) -> list[str]:
    # read in one script, so that a refresh cannot fall between finding and reading
    found: list[str] = browser.execute_script(
        "return [...document.querySelectorAll('#members td.score')].map(td => td.textContent)"
    )
    return found


def _done_nodes(browser: Any) -> int:
    return int(
        browser.execute_script("return document.querySelectorAll('#tree circle.node.done').length")
    )


def test_the_dashboard_follows_a_run(
    browser: Any, served: tuple[str, Path], tmp_path: Path, screenshots: Path
) -> None:
    url, database = served
    run = GatedRun(f"sqlite:///{database}", tmp_path / "ckpt", tensorboard=False)
    try:
        # signing in through the address: the key is traded for a cookie
        browser.get(f"{url}/dashboard?{urlencode({'key': KEY, 'experiment': 'live'})}")
        assert "key=" not in browser.current_url
        _until(
            browser,
            "the members",
            lambda b: len(b.find_elements(By.CSS_SELECTOR, "#members tbody tr")) == POPULATION,
        )
        # before any trial finished: no scores, no finished node in the tree
        assert set(_scores(browser)) == {NO_SCORE}
        assert _done_nodes(browser) == 0
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-status") == "running"

        run.release(POPULATION)  # the first generation, and no more
        _until(browser, "a score for every member", lambda b: NO_SCORE not in _scores(b))
        _until(browser, "the first generation in the tree", lambda b: _done_nodes(b) >= POPULATION)
        first = _done_nodes(browser)
        assert first == POPULATION
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-status") == "running"
        assert browser.save_screenshot(str(screenshots / "dashboard-running.png"))

        run.release(POPULATION * GENERATIONS)  # the rest
        _until(
            browser,
            "the finished run",
            lambda b: (
                b.find_element(By.TAG_NAME, "body").get_attribute("data-status") == "finished"
            ),
        )
        total = POPULATION * GENERATIONS
        _until(browser, "every trial in the tree", lambda b: _done_nodes(b) == total)
        assert _done_nodes(browser) > first  # the tree grew
        exploits = browser.find_elements(By.CSS_SELECTOR, "#tree line.edge.exploit")
        assert exploits, "the family tree shows no exploit"
        assert browser.find_elements(By.CSS_SELECTOR, "#curves canvas")
        assert browser.find_elements(By.CSS_SELECTOR, "#schedules canvas")
        assert not browser.find_element(By.ID, "error").text
        assert not console_errors(browser)
        shot = screenshots / "dashboard-finished.png"
        assert browser.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        result = run.finish()  # never leave the run waiting
    assert len(result.members) == POPULATION


# hostile names --------------------------------------------------------------------------
HOSTILE_NAME = '<script>window.__pwned = 1</script>"><img src=x onerror="window.__pwned = 2">'
HOSTILE_PARAM = '<img src=x onerror="window.__pwned = 3">'
HOSTILE_VALUE = "</td><script>window.__pwned = 4</script>"
HOSTILE_METRIC = '<svg onload="window.__pwned = 5">'


def hostile(trial: pk.Trial) -> None:
    """Reports the objective and a metric whose name is markup."""
    for step in trial.steps():
        trial.report(step, score=float(step) * (1 + trial.member), **{HOSTILE_METRIC: 1.0})
    (trial.checkpoint_dir / "done").write_text("yes")


def test_hostile_names_are_shown_as_text_and_never_run(browser: Any, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'hostile.db'}"
    result = pk.run(
        hostile,
        space={HOSTILE_PARAM: pk.Choice([HOSTILE_VALUE, f"{HOSTILE_VALUE}!"])},
        metric="score",
        population=2,
        workers=1,
        ready_every=2,
        total_steps=4,
        executor="thread",
        storage=storage,
        checkpoint_dir=tmp_path / "ckpt",
        name="hostile",
        progress=False,
        tensorboard=False,
    )
    # New names are letters, digits, "-", "_" and "."; a database written before that
    # rule may still hold any name, so one is given the hostile name by hand.
    with sqlite3.connect(tmp_path / "hostile.db") as db:
        db.execute("UPDATE pbt_experiments SET name = ? WHERE name = 'hostile'", (HOSTILE_NAME,))
    with PBTServer(0, KEY, storage=storage, checkpoint_root=tmp_path / "ckpt") as server:
        browser.get(f"{server.url}/dashboard?{urlencode({'key': KEY})}")
        browser.get(f"{server.url}/dashboard?{urlencode({'experiment': HOSTILE_NAME})}")
        _until(browser, "the title", lambda b: b.find_element(By.ID, "title").text == HOSTILE_NAME)
        _until(
            browser,
            "the members",
            lambda b: len(b.find_elements(By.CSS_SELECTOR, "#members tbody tr")) == 2,
        )
        assert browser.title == f"pbtkit: {HOSTILE_NAME}"
        links = browser.find_elements(By.CSS_SELECTOR, "#experiments a")
        assert [a.text for a in links] == [HOSTILE_NAME]
        headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#members th")]
        assert HOSTILE_PARAM in headers
        column = headers.index(HOSTILE_PARAM)
        for m in result.members:
            row = browser.find_element(By.CSS_SELECTOR, f"#members tr[data-member='{m.member}']")
            cells = row.find_elements(By.TAG_NAME, "td")
            assert cells[column].text == m.hparams[HOSTILE_PARAM]
        options = [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#metric option")]
        assert HOSTILE_METRIC in options
        # the markup stayed text: no element it names was made, no script of it ran
        assert browser.execute_script("return window.__pwned === undefined")
        assert browser.find_elements(By.CSS_SELECTOR, "main img, main script, nav img") == []
        assert browser.find_elements(By.CSS_SELECTOR, "#members svg, #metric svg") == []
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 - reading it is the check
        # choosing the hostile metric draws its curves, still as text
        browser.execute_script(
            "const s = document.getElementById('metric');"
            "s.value = arguments[0]; s.dispatchEvent(new Event('change'));",
            HOSTILE_METRIC,
        )
        _until(
            browser,
            "the hostile metric's curves",
            lambda b: HOSTILE_METRIC in b.find_element(By.ID, "curves-section").text,
        )
        # the charts' captions, the lineage and the exploit log name them as text too
        for section in ("lineage-section", "exploits-section"):
            browser.find_element(By.CSS_SELECTOR, f"#{section} summary").click()
        captions = [c.text for c in browser.find_elements(By.CSS_SELECTOR, ".chart-title")]
        assert f"schedule of {HOSTILE_PARAM}" in captions
        assert f"{HOSTILE_PARAM} along the best member's lineage" in captions
        lineage = browser.find_element(By.ID, "lineage-table").text
        assert HOSTILE_VALUE in lineage or f"{HOSTILE_VALUE}!" in lineage
        assert browser.find_elements(By.CSS_SELECTOR, "main img, main script") == []
        assert browser.execute_script("return window.__pwned === undefined")


# conditional hyperparameters ------------------------------------------------------------
def test_inactive_hyperparameters_are_empty_cells_and_gaps_in_the_schedules(
    browser: Any, tmp_path: Path
) -> None:
    from pbtkit.examples import digits

    result = digits.main(
        tmp_path,
        optimizers=True,
        progress=False,
        population=8,
        total_steps=12,
        ready_every=2,
        executor="thread",
        evolution="generational",
        exploit=pk.Truncation(0.5),  # many exploits: members leave a branch and come back
        explore=pk.Perturb(per_param={"optimizer": {"resample_probability": 1.0}}),
        initial=[{"optimizer": "sgd"}] * 4 + [{"optimizer": "adam"}] * 4,
        seed=3,
        tensorboard=False,
    )
    storage = f"sqlite:///{tmp_path / 'pbt.db'}"
    with PBTServer(0, KEY, storage=storage, checkpoint_root=tmp_path / "checkpoints") as server:
        browser.get(f"{server.url}/dashboard?{urlencode({'key': KEY, 'experiment': result.name})}")
        _until(
            browser,
            "the members",
            lambda b: len(b.find_elements(By.CSS_SELECTOR, "#members tbody tr")) == 8,
        )
        view = browser.execute_script(
            "return fetch('/dashboard/api/experiment?name=' + arguments[0]).then((r) => r.json())",
            result.name,
        )
        headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#members th")]
        for member in view["members"]:
            row = browser.find_element(
                By.CSS_SELECTOR, f"#members tr[data-member='{member['member']}']"
            )
            cells = row.find_elements(By.TAG_NAME, "td")
            for name in view["hparams"]:
                cell = cells[headers.index(name)]
                inactive = "inactive" in (cell.get_attribute("class") or "").split()
                assert inactive == (name not in member["hparams"]), (member, name)
                assert (cell.text == "") == inactive
        # each stretch of steps a member had the value is one line; a gap starts another
        gaps = 0
        for name in ("momentum", "beta1"):
            expected = 0
            for stretches in view["schedules"].values():
                present = [name in hparams for _, _, hparams in stretches]
                runs = sum(
                    now and not before for before, now in itertools.pairwise([False, *present])
                )
                expected += runs
                gaps += runs > 1
            # the chart's own data: a series breaks (a new line) at every null
            lines = browser.execute_script(
                "const cell = [...document.querySelectorAll('#schedules [data-chart]')].find("
                "  (c) => c.dataset.chart === 'schedule:' + arguments[0]);"
                "const u = cell.querySelector('.plot').__uplot;"
                "let runs = 0;"
                "for (let s = 1; s < u.data.length; s++) {"
                "  let on = false;"
                "  for (const v of u.data[s]) {"
                "    const now = v !== null && v !== undefined;"
                "    if (now && !on) runs++;"
                "    on = now;"
                "  }"
                "}"
                "return runs;",
                name,
            )
            assert lines == expected, name
        assert gaps, "no member's schedule has a gap"
        assert not browser.find_element(By.ID, "error").text
