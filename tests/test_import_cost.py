"""``import pbtkit`` and ``pbtkit --help`` load none of the heavy modules: the store, numpy,
the controller, the service stack and the optional extras are imported where first used,
and the public names still resolve to what they always were."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pbtkit as pk

ROOT = Path(__file__).resolve().parent.parent

# Modules that ``import pbtkit`` and ``pbtkit --help`` must not load (each cost tens to
# hundreds of milliseconds of every command's and every worker's start).
HEAVY = (
    "numpy",
    "sqlalchemy",
    "alembic",
    "fsspec",
    "fastapi",
    "uvicorn",
    "httpx",
    "tensorboardX",
    "torch",
    "pbtkit.store",
    "pbtkit.controller",
    "pbtkit.api",
    "pbtkit.worker",
)


def _loaded_after(code: str, extra_path: Path | None = None) -> list[str]:
    """The HEAVY modules loaded in a fresh interpreter after running ``code``."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(str(p) for p in (ROOT / "src", extra_path) if p),
        },
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return list(json.loads(out.strip().splitlines()[-1]))


def test_import_pbtkit_loads_nothing_heavy() -> None:
    assert _loaded_after("import pbtkit") == []


def test_help_loads_nothing_heavy() -> None:
    code = (
        "import contextlib, io\n"
        "from pbtkit.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
    )
    assert _loaded_after(code) == []


def test_a_public_name_loads_its_module_when_first_used() -> None:
    loaded = _loaded_after("import pbtkit as pk\npk.Uniform(0, 1)")
    assert "numpy" in loaded  # the search space needs it, and is what was asked for
    assert "pbtkit.store" not in loaded
    assert "sqlalchemy" not in loaded


def test_every_public_name_resolves_and_is_listed() -> None:
    for name in pk.__all__:
        assert getattr(pk, name) is not None, name
    assert set(pk.__all__) <= set(dir(pk))
    from pbtkit.core.space import Uniform
    from pbtkit.replay import replay

    assert pk.Uniform is Uniform
    assert pk.replay is replay  # the function, though the submodule of that name is loaded


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        pk.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018


def test_a_worker_on_a_local_root_never_loads_fsspec(tmp_path: Path) -> None:
    code = (
        "import pbtkit as pk\n"
        "from pbtkit.controller import Controller\n"
        "from pbtkit.spec import ExperimentSpec\n"
        "from pbtkit.store import open_store\n"
        "from pbtkit.worker import run_worker\n"
        "from tests import trainers\n"
        "spec = ExperimentSpec(space=pk.SearchSpace({'x': pk.Uniform(0.1, 1)}), policy=pk.PBT("
        "objective=pk.Objective('score', 'max'), ready_every=5, total_steps=10), population=2, "
        f"checkpoint_root={str(tmp_path / 'ckpt')!r})\n"
        f"controller = Controller(open_store({str(tmp_path / 'pbt.db')!r}))\n"
        "controller.create('e', spec)\n"
        "assert run_worker(controller, 'e', trainers.climb_quietly, 'w') >= 4\n"
    )
    loaded = _loaded_after(code, extra_path=ROOT)
    assert "fsspec" not in loaded
    assert "sqlalchemy" not in loaded
