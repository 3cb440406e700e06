"""Conditions in config files: TOML, YAML and JSON read the same space; it is stored and
read back over HTTP from a real server; a cycle or a dangling parent is refused with a
message that names it, from a file, from the command line and over the wire."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import pbtkit as pk
from pbtkit._exceptions import ConfigError
from pbtkit.config import load_config, run_kwargs
from pbtkit.core import SearchSpace
from pbtkit.examples import digits
from pbtkit.service import PBTClient, PBTServer
from pbtkit.spec import ExperimentSpec
from tests.helpers import free_port as _free_port
from tests.helpers import wait_until_serving
from tests.strategies import member_violations

ROOT = Path(__file__).resolve().parents[1]
KEY = "config-secret"
# this checkout's code, also when another one is installed
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
EXPECTED = SearchSpace(
    {
        **digits.OPTIMIZER_SPACE,
        "layers": pk.IntUniform(1, 4),
        "width3": pk.IntUniform(8, 64, when={"layers": pk.Gte(3)}),
        "decay": pk.LogUniform(1e-4, 1e-2, when={"optimizer": ["adam"], "lr": pk.Lt(0.1)}),
    }
)

TOML = """
metric = "accuracy"
population = 4
workers = 1
ready_every = 1
total_steps = 2
evolution = "generational"

[space]
optimizer = { type = "choice", values = ["sgd", "adam"] }
lr = { type = "loguniform", low = 1e-4, high = 1.0 }
momentum = { type = "uniform", low = 0.0, high = 0.99, when = { optimizer = "sgd" } }
beta1 = { type = "uniform", low = 0.5, high = 0.999, when = { optimizer = "adam" } }
beta2 = { type = "uniform", low = 0.9, high = 0.9999, when = { optimizer = "adam" } }
l2 = { type = "loguniform", low = 1e-6, high = 0.1 }
layers = { type = "int", low = 1, high = 4 }
width3 = { type = "int", low = 8, high = 64, when = { layers = { gte = 3 } } }

[space.decay]
type = "loguniform"
low = 1e-4
high = 1e-2
when = { optimizer = ["adam"], lr = { lt = 0.1 } }
"""

YAML = """
metric: accuracy
population: 4
workers: 1
ready_every: 1
total_steps: 2
space:
  optimizer: {type: choice, values: [sgd, adam]}
  lr: {type: loguniform, low: 1e-4, high: 1.0}      # YAML 1.1 reads 1e-4 as text
  momentum: {type: uniform, low: 0.0, high: 0.99, when: {optimizer: sgd}}
  beta1:
    type: uniform
    low: 0.5
    high: 0.999
    when: {optimizer: adam}
  beta2: {type: uniform, low: 0.9, high: 0.9999, when: {optimizer: adam}}
  l2: {type: loguniform, low: 1e-6, high: 0.1}
  layers: {type: int, low: 1, high: 4}
  width3: {type: int, low: 8, high: 64, when: {layers: {gte: 3}}}
  decay:
    type: loguniform
    low: 1e-4
    high: 1e-2
    when:
      optimizer: [adam]
      lr: {lt: 1e-1}
"""


def _json_config() -> str:
    return json.dumps(
        {
            "metric": "accuracy",
            "population": 4,
            "workers": 1,
            "ready_every": 1,
            "total_steps": 2,
            "space": EXPECTED.to_dict(),
        }
    )


@pytest.mark.parametrize(("suffix", "text"), [(".toml", TOML), (".yaml", YAML), (".json", None)])
def test_toml_yaml_and_json_read_the_same_conditional_space(
    tmp_path: Path, suffix: str, text: str | None
) -> None:
    path = tmp_path / f"pbt{suffix}"
    path.write_text(text if text is not None else _json_config())
    space = SearchSpace.coerce(run_kwargs(load_config(path))["space"])
    assert space == EXPECTED
    assert space.order == EXPECTED.order
    assert json.dumps(space.to_dict()) == json.dumps(EXPECTED.to_dict())


@pytest.mark.parametrize(
    ("when", "message"),
    [
        (
            "when = { optimiser = 'sgd' }",
            "hyperparameter 'momentum' depends on 'optimiser', which is not in the search space",
        ),
        ("when = { optimizer = 'adamw' }", "'adamw' is not a value of optimizer"),
        ("when = { momentum = { gt = 0.5 } }", "'momentum' has a condition on itself"),
        ("when = { optimizer = { gte = 1 } }", "compares, but optimizer is Choice"),
        ("when = { lr = { gte = 2 } }", "can never hold: lr is LogUniform(0.0001, 1.0)"),
        ("when = 'sgd'", "when must map parent hyperparameters to conditions"),
    ],
)
def test_a_bad_condition_in_a_config_file_is_refused_by_name(
    tmp_path: Path, when: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(TOML.replace('when = { optimizer = "sgd" }', when.replace("'", '"')))
    with pytest.raises(ConfigError) as caught:
        SearchSpace.coerce(run_kwargs(load_config(path))["space"])
    assert message in str(caught.value)


CYCLIC = """
metric = "score"
ready_every = 1
total_steps = 2

[space]
optimizer = { type = "choice", values = ["sgd", "adam"], when = { momentum = { gt = 0.5 } } }
momentum = { type = "uniform", low = 0.0, high = 0.99, when = { optimizer = "sgd" } }
"""


def test_pbtkit_run_refuses_a_cyclic_config_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cyclic.toml"
    path.write_text(CYCLIC)
    done = subprocess.run(
        [sys.executable, "-m", "pbtkit", "run", "tests.trainers:climb", "--config", str(path),
         "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--no-progress"],
        check=False, capture_output=True, text=True, env=ENV,
    )  # fmt: skip
    assert done.returncode != 0
    assert (
        "the conditions form a cycle: 'optimizer', which depends on 'momentum', which depends "
        "on 'optimizer'" in done.stderr
    )
    assert "Traceback" not in done.stderr


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`pbtkit serve` with a key on a SQLite file; yields its URL and the file."""
    database = tmp_path / "served.db"
    port = _free_port()
    env = {**ENV, "PBTKIT_AUTH_KEY": KEY}
    process = subprocess.Popen(
        [sys.executable, "-m", "pbtkit", "serve", "--storage", f"sqlite:///{database}",
         "--checkpoint-root", str(tmp_path / "ckpt"), "--port", str(port)],
        env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(url, process, "pbtkit serve")
    try:
        yield url, database
    finally:
        process.terminate()
        process.wait(10)


def _stored_space(url: str, name: str) -> tuple[SearchSpace, dict[str, object]]:
    response = httpx.get(
        f"{url}/v1/experiments/{name}", headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    )
    response.raise_for_status()
    config = response.json()["config"]
    return ExperimentSpec.from_dict(config).space, config["space"]


@pytest.mark.slow
def test_a_config_with_conditions_is_stored_and_read_back_over_http(
    tmp_path: Path, served: tuple[str, Path]
) -> None:
    url, database = served
    config = tmp_path / "pbt.toml"
    config.write_text(TOML)
    # load and store: `pbtkit run` on the file the server serves, with worker processes
    subprocess.run(
        [sys.executable, "-m", "pbtkit", "run", "pbtkit.examples.digits:train", "--config",
         str(config), "--storage", f"sqlite:///{database}", "--name", "from-toml",
         "--checkpoint-dir", str(tmp_path / "ckpt"), "--no-progress"],
        check=True, capture_output=True, env=ENV,
    )  # fmt: skip
    space, raw = _stored_space(url, "from-toml")
    assert space == EXPECTED
    assert raw == EXPECTED.to_dict()
    result = pk.Result.load(f"sqlite:///{database}", "from-toml")
    for trial in result.trials:
        assert member_violations(EXPECTED, trial.hparams) == []

    # a glass-box client joins with a YAML file: created on the server over HTTP
    yaml_config = tmp_path / "glass.yaml"
    yaml_config.write_text(
        "name: from-yaml\npopulation: 2\ntotal_steps: 4\n"
        "exploit: {type: truncation, fraction: 0.5}\n"
        "explore: {type: perturb, per_param: {optimizer: {resample_probability: 1.0}}}\n"
        + YAML[YAML.index("space:") :]
    )
    clients = [PBTClient(url, None, KEY, yaml_config) for _ in range(2)]
    try:
        for step in range(4):
            for i, client in enumerate(clients):
                values = client.hyperparameters()
                assert member_violations(EXPECTED, values) == []
                path = tmp_path / "ckpt" / f"glass-{i}-{step}"
                path.mkdir(parents=True)
                (path / "w.json").write_text("{}")
                client.save(path, float(i))
                if client.should_exploit():
                    client.exploit()
                    assert member_violations(EXPECTED, client.explore()) == []
    finally:
        for client in clients:
            client.close()
    space, raw = _stored_space(url, "from-yaml")
    assert space == EXPECTED
    assert raw == EXPECTED.to_dict()


def test_a_cyclic_or_dangling_space_sent_over_the_wire_is_refused(tmp_path: Path) -> None:
    spec = ExperimentSpec(
        space=EXPECTED,
        policy=pk.PBT(pk.Objective("accuracy"), ready_every=1, total_steps=2),
        population=2,
        checkpoint_root=str(tmp_path),
    ).to_dict()
    cyclic = json.loads(json.dumps(spec))
    cyclic["space"]["optimizer"]["when"] = {"beta1": {"gte": 0.9}}
    dangling = json.loads(json.dumps(spec))
    dangling["space"]["momentum"]["when"] = {"solver": "sgd"}
    deep = json.loads(json.dumps(spec))
    deep["space"]["momentum"]["when"] = {"optimizer": [["sgd"]]}
    with PBTServer(
        0, KEY, storage=f"sqlite:///{tmp_path / 'w.db'}", checkpoint_root=tmp_path
    ) as server:
        for body, message in [
            (cyclic, "the conditions form a cycle: 'optimizer', which depends on 'beta1'"),
            (dangling, "'momentum' depends on 'solver', which is not in the search space"),
            (deep, "['sgd'] (list) is not a value a hyperparameter can take"),
        ]:
            response = httpx.post(
                f"{server.url}/v1/experiments",
                json={"name": "hostile", "spec": body},
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=30,
            )
            assert response.status_code == 400, response.text
            assert response.json()["error"] == "ConfigError"
            assert message in response.json()["message"]
        listed = httpx.get(
            f"{server.url}/v1/experiments", headers={"Authorization": f"Bearer {KEY}"}, timeout=30
        ).json()
        assert listed == []
