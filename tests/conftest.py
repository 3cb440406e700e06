"""Shared test configuration: the Hypothesis profile and the fixtures used across the suite
(a PostgreSQL server, an S3 server, a finished toy run, a browser). Helpers that are not
fixtures are in :mod:`tests.helpers`."""

from __future__ import annotations

import getpass
import glob
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from hypothesis import settings

from pbtkit.examples import toy
from tests.helpers import POPULATION, TOTAL_STEPS, Run

# "ci" is the default; HYPOTHESIS_PROFILE=dev runs fewer examples while iterating.
settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile("dev", max_examples=30, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# fixtures shared by the engine tests follow


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL server on loopback for this test session; yields its base URL.

    .ci/run installs PostgreSQL from Debian's packages; elsewhere a missing PostgreSQL
    skips these tests (in CI it fails them).
    """
    bindir = _postgres_bin()
    if bindir is None:
        message = "PostgreSQL is not installed: apt-get install postgresql (as .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # Not under pytest's temporary folder: that one is closed to other users, and the
    # server runs as the postgres user when the tests run as root.
    base = Path(tempfile.mkdtemp(prefix="pbtkit-pg-"))
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    prefix: list[str] = []
    user = getpass.getuser()
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: use its own account
        prefix, user = ["runuser", "-u", "postgres", "--"], "postgres"
        shutil.chown(base, user="postgres")
        shutil.chown(sockets, user="postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = lambda *cmd: subprocess.run([*prefix, *cmd], check=True, capture_output=True)  # noqa: E731
    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "pbtkit", "--no-sync")
    options = (
        f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    run(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-w",
        "-l",
        str(base / "log"),
        "start",
    )
    del user
    try:
        yield f"postgresql+psycopg://pbtkit@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL server."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = postgres_server.replace("postgresql+psycopg", "postgresql") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{postgres_server}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


Factory = Callable[[], str]


# An S3-compatible server on loopback (moto) ----------------------------------------


BUCKET = "pbtkit-checkpoints"


def need(module: str) -> Any:
    """Import an optional test dependency; missing, it skips here and fails in CI."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        message = f"{module} is not installed: pip install 'pbtkit[dev]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3-compatible server on loopback with one bucket; yields its endpoint URL.

    The endpoint and credentials go into the environment, as a user would set them, so
    that worker processes started by a run reach the same server.
    """
    moto_server = need("moto.server")
    s3fs = need("s3fs")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    nowhere = str(tmp_path_factory.mktemp("aws") / "none")
    with pytest.MonkeyPatch.context() as env:
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            env.delenv(key, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_ENDPOINT_URL", endpoint)
        env.setenv("AWS_CONFIG_FILE", nowhere)  # a developer's own profile must not leak in
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", nowhere)
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            fsspec.filesystem("s3").mkdir(BUCKET)
            yield endpoint
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            server.stop()


# Runs and a browser that tests of several packages look at --------------------------------


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The toy of the PBT paper, 4 members x 30 steps, on SQLite, with TensorBoard."""
    directory = tmp_path_factory.mktemp("toy")
    result = toy.main(
        directory,
        progress=False,
        population=POPULATION,
        total_steps=TOTAL_STEPS,
        executor="thread",
        name="toy",
        tensorboard=True,
    )
    return Run(directory, f"sqlite:///{directory / 'pbt.db'}", "toy", result)


def _browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        message = (
            "the browser tests need Debian's Chromium and its driver: "
            "apt-get install chromium chromium-driver (as .ci/run does)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return chromium, driver


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless Chromium driven by Selenium, shared by the browser tests."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = _browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root, in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1800",
    ):
        options.add_argument(argument)
    # the page's console, so a test can say that no script failed
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(options=options, service=Service(driver))
    try:
        yield session
    finally:
        session.quit()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the browser tests keep their screenshots (``build/screenshots``, or
    ``$PBTKIT_SCREENSHOTS``): kept after the run, to look at what the tests saw."""
    folder = Path(
        os.environ.get("PBTKIT_SCREENSHOTS")
        or Path(__file__).resolve().parents[1] / "build" / "screenshots"
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder
