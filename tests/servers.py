"""Waiting for a real server process the tests started (``pbtkit serve``, ``pbtkit dashboard``)."""

from __future__ import annotations

import subprocess
import time

import httpx


def wait_until_serving(
    url: str, process: subprocess.Popen[str] | subprocess.Popen[bytes], name: str
) -> None:
    """Return once ``url/health`` answers 200; fail if ``process`` exits or 30 s pass."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, f"{name} exited"
        assert time.monotonic() < deadline, f"{name} did not start"
        time.sleep(0.05)
