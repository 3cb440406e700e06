"""The committed ``openapi.json`` is the schema the service publishes now."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.routing import APIRoute

from pbtkit.service import create_app
from pbtkit.store import MemoryStore

ROOT = Path(__file__).resolve().parents[2]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "pbtkit_openapi_script", ROOT / "scripts" / "openapi.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _load_script()


@pytest.fixture(scope="module")
def rendered() -> str:
    return str(script.render(script.schema()))


def test_the_committed_schema_is_current(rendered: str) -> None:
    committed = (ROOT / "openapi.json").read_text(encoding="utf-8")
    assert committed == rendered, script.STALE


def test_the_schema_is_the_same_every_time(rendered: str) -> None:
    assert str(script.render(script.schema())) == rendered


def test_the_schema_names_no_path_of_this_machine() -> None:
    text = (ROOT / "openapi.json").read_text(encoding="utf-8")
    for local in {tempfile.gettempdir(), str(ROOT), str(Path.home())}:
        if len(local) > 4:  # a home of "/" names nothing in particular
            assert local not in text


def test_the_schema_has_every_route_of_the_app(tmp_path: Path) -> None:
    document = json.loads((ROOT / "openapi.json").read_text(encoding="utf-8"))
    paths: dict[str, dict[str, object]] = document["paths"]
    assert "/health" in paths
    assert "get" in paths["/health"]
    assert all(path.startswith("/v1/") for path in paths if path != "/health")
    assert {"/v1/experiments", "/v1/lease", "/v1/trials/{trial_id}/finish"} <= paths.keys()
    app = create_app(MemoryStore(), tmp_path)
    served = {
        (route.path, method.lower())
        for route in app.app.routes
        if isinstance(route, APIRoute) and route.include_in_schema
        for method in route.methods or ()
    }
    published = {(path, method) for path, item in paths.items() for method in item}
    assert published == served


def test_check_fails_on_a_stale_file_and_passes_once_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "openapi.json"
    assert script.main(["--check", "--output", str(target)]) == 1  # missing
    target.write_text("{}\n", encoding="utf-8")
    assert script.main(["--check", "--output", str(target)]) == 1  # stale
    assert capsys.readouterr().err.count(script.STALE) == 2
    assert script.main(["--output", str(target)]) == 0
    assert script.main(["--check", "--output", str(target)]) == 0
    assert target.read_text(encoding="utf-8").endswith("}\n")


def test_the_script_checks_from_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "openapi.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
