"""Without an extra, every command that needs it says which to install; the client works
with httpx and pydantic alone; ``from pbtkit import PBTServer, PBTClient`` works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Runs `pbtkit ARGS...` (or Python code) with some top-level packages made unimportable,
# as on a machine where their extra is not installed.
_WITHOUT = """
import importlib.abc, runpy, sys
blocked = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
if sys.argv[2] == "-c":
    exec(sys.argv[3])
else:
    sys.argv = ["pbtkit", *sys.argv[2:]]
    runpy.run_module("pbtkit", run_name="__main__")
"""


def _without(blocked: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PBTKIT_AUTH_KEY", None)
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT, blocked, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("blocked", "args", "extra"),
    [
        ("fastapi,uvicorn,starlette", ("serve",), "service"),
        ("fastapi,uvicorn,starlette", ("dashboard",), "dashboard"),
        ("httpx", ("worker", "tests.trainers:climb", "--server", "http://127.0.0.1:9"), "client"),
        (
            "pydantic",
            ("worker", "tests.trainers:climb", "--server", "http://127.0.0.1:9"),
            "client",
        ),
        ("matplotlib", ("plot", "--storage", "x.db"), "plot"),
    ],
)
def test_a_missing_extra_is_named_not_a_traceback(
    tmp_path: Path, blocked: str, args: tuple[str, ...], extra: str
) -> None:
    out = _without(blocked, *args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert f"pip install 'pbtkit[{extra}]'" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr, out.stderr


def test_the_client_and_the_glass_box_names_need_no_server_libraries(tmp_path: Path) -> None:
    code = (
        "from pbtkit.service.client import RemoteController\n"
        "from pbtkit import PBTClient\n"
        "from pbtkit.service import PBTClient as same\n"
        "assert PBTClient is same\n"
        "RemoteController('http://127.0.0.1:9', max_outage=0).close()\n"
        "import sys\n"
        "assert 'fastapi' not in sys.modules and 'uvicorn' not in sys.modules\n"
        "try:\n"
        "    from pbtkit import PBTServer\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = _without("fastapi,uvicorn,starlette", "-c", code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ConfigError" in out.stdout
    assert "pip install 'pbtkit[service]'" in out.stdout


def test_the_glass_box_names_come_from_pbtkit_itself() -> None:
    import pbtkit
    from pbtkit import PBTClient, PBTServer
    from pbtkit.service import glassbox, server

    assert PBTServer is server.PBTServer
    assert PBTClient is glassbox.PBTClient
    assert {"PBTServer", "PBTClient"} <= set(pbtkit.__all__)
