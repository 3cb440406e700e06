"""`pbtkit demo`: every command it suggests works as printed."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_every_hint_the_quick_demo_prints_works(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    env.pop("PBTKIT_AUTH_KEY", None)
    out = subprocess.run(
        [sys.executable, "-m", "pbtkit", "demo", "--quick", "--dir", "demo", "--no-progress"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    hints = out.stdout.split("look at them with\n", 1)[1].splitlines()
    commands = [
        line.split("#")[0].strip()
        for line in hints
        if line.startswith("  ") and not line.strip().startswith("(")
    ]
    assert len(commands) >= 4, out.stdout
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "tensorboard":  # a server of its own: its folder must hold the runs
            logdir = tmp_path / argv[argv.index("--logdir") + 1]
            assert list(logdir.rglob("events.out.tfevents.*")), command
            continue
        assert Path(argv[0]).name == "pbtkit", command
        argv = [sys.executable, "-m", "pbtkit", *argv[1:]]
        if "dashboard" in argv:
            _dashboard_answers(argv, tmp_path, env)
            continue
        ran = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert ran.returncode == 0, f"`{command}` failed: {ran.stderr}"
        assert "Traceback" not in ran.stderr, command
    assert "digits-quick" in out.stdout


def _dashboard_answers(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    server = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        url = re.search(r"http://\S+", line)
        assert url, line
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(url.group(0), timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the dashboard did not answer"
                time.sleep(0.1)
        assert answer.status_code == 200
        assert "pbtkit" in answer.text
    finally:
        server.terminate()
        server.wait(10)
