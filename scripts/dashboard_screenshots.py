"""Take the README's dashboard screenshots from a real run of the PBT paper's toy.

The run (population 8, 100 steps, ready every 10, as ``make demo`` runs it) trains in
this process; its trials wait at a gate this script opens, so the first picture is taken
while the run is going on (after 32 of its 80 trials) and the others once it has finished.
The page is served by ``pbtkit dashboard``'s application and shown in Debian's headless
Chromium, as in the browser tests::

    python scripts/dashboard_screenshots.py            # writes docs/images/dashboard-*.png
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

import pbtkit as pk
from pbtkit.examples import toy
from pbtkit.service.dashboard import dashboard_app

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
BEFORE = 32  # trials let through before the "during the run" picture


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _browser() -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,1500", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def _wait(what: str, condition: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"never saw {what}")
        time.sleep(0.1)


def main() -> None:
    directory = Path(tempfile.mkdtemp(prefix="pbtkit-shots-"))
    storage = f"sqlite:///{directory / 'pbt.db'}"
    gate = threading.Semaphore(0)

    def train(trial: pk.Trial) -> None:
        if not gate.acquire(timeout=300):
            raise RuntimeError("the script never let this trial through")
        toy.train(trial)

    outcome: list[object] = []
    run = threading.Thread(
        target=lambda: outcome.append(
            pk.run(
                train, space=toy.SPACE, metric="score", population=8, workers=2,
                ready_every=10, total_steps=100, exploit=pk.Truncation(0.25),
                explore=pk.Perturb((0.8, 1.2), resample_probability=0.25), executor="thread",
                storage=storage, checkpoint_dir=directory / "ckpt", name="toy",
                progress=False, tensorboard=False,
            )
        )
    )  # fmt: skip
    run.start()
    port = _port()
    _wait("the database", (directory / "pbt.db").exists)
    time.sleep(0.5)  # the experiment is created right after its file
    server = uvicorn.Server(
        uvicorn.Config(dashboard_app(storage), host="127.0.0.1", port=port, log_level="warning")
    )
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    _wait("the server", lambda: server.started)
    browser = _browser()
    try:
        for _ in range(BEFORE):
            gate.release()
        browser.get(f"http://127.0.0.1:{port}/dashboard?experiment=toy")

        def done(count: int) -> bool:
            return bool(
                browser.execute_script(
                    "return document.querySelectorAll('#tree circle.node.done').length"
                )
                >= count
            )

        _wait("the first trials", lambda: done(BEFORE))
        time.sleep(2.5)  # one more refresh, so every chart has drawn them
        browser.save_screenshot(str(OUT / "dashboard-running.png"))
        for _ in range(200):
            gate.release()
        run.join(300)
        if not (outcome and isinstance(outcome[0], pk.Result)):
            raise SystemExit(f"the run did not finish: {outcome}")
        _wait(
            "the finished run",
            lambda: (
                browser.find_element(By.TAG_NAME, "body").get_attribute("data-status") == "finished"
            ),
        )
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(OUT / "dashboard-finished.png"))
        for section in ("lineage-section", "exploits-section"):
            browser.find_element(By.CSS_SELECTOR, f"#{section} summary").click()
        time.sleep(0.5)
        browser.execute_script("document.getElementById('lineage-section').scrollIntoView()")
        browser.save_screenshot(str(OUT / "dashboard-lineage.png"))
    finally:
        browser.quit()
        server.should_exit = True
        for _ in range(500):
            gate.release()
    for name in ("running", "finished", "lineage"):
        print(OUT / f"dashboard-{name}.png")


if __name__ == "__main__":
    main()
