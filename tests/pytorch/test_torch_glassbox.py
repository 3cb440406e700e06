"""pbtkit.torch in a glass-box loop: a real server, clients running their own torch loops,
checkpoints passed by path (``client.parameters_path()``)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")

import pbtkit.torch as pt  # noqa: E402
from pbtkit.service import PBTClient, PBTServer  # noqa: E402

KEY = "torch-glass-box-key"
CONFIG = """
name: torch-glassbox
population: 3
metric: score
mode: max
ready_every: 1
total_steps: 8
space:
  lr: {type: loguniform, low: 0.001, high: 0.5}
  momentum: {type: uniform, low: 0.0, high: 0.9}
exploit: {type: truncation, fraction: 0.34}
"""


def _loop(port: int, config: Path, root: Path, seen: list[dict[str, Any]]) -> None:
    target = torch.tensor([1.0, -2.0, 0.5])
    with PBTClient("http://127.0.0.1", port, KEY, config) as client:
        hp = client.hyperparameters()
        model = torch.nn.Linear(3, 1, bias=False)
        opt = torch.optim.SGD(model.parameters(), lr=hp["lr"], momentum=hp["momentum"])
        step = 0
        while not client.done:
            for _ in range(5):
                opt.zero_grad()
                loss = (model.weight[0] - target).pow(2).sum()
                loss.backward()
                opt.step()
            step += 1
            path = pt.save(root / f"m{client.member}-{step}", model=model, optimizer=opt)
            client.save(path, -loss.item())
            if client.should_exploit():
                donor_path = client.parameters_path()
                assert donor_path is not None
                hp = client.explore()
                pt.load(donor_path, model=model, optimizer=opt, hparams=hp)
                donor = torch.nn.Linear(3, 1, bias=False)
                pt.load(donor_path, model=donor)
                group = opt.param_groups[0]
                seen.append(
                    {
                        "in_force": (group["lr"], group["momentum"]),
                        "explored": (hp["lr"], hp["momentum"]),
                        "same_weights": bool(torch.equal(model.weight, donor.weight)),
                        "own": donor_path.startswith(str(root / f"m{client.member}-")),
                    }
                )


@pytest.mark.slow
def test_glass_box_clients_load_donors_by_path_with_the_explored_values(tmp_path: Path) -> None:
    config = tmp_path / "pbt.yaml"
    config.write_text(CONFIG)
    root = tmp_path / "ckpt"
    root.mkdir()
    seen: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            _loop(server.port, config, root, seen)
        except BaseException as exc:  # report in the main thread
            errors.append(exc)

    with PBTServer(
        0, KEY, storage=f"sqlite:///{tmp_path / 'pbt.db'}", checkpoint_root=root
    ) as server:
        threads = [threading.Thread(target=run) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert not errors, errors
    assert seen, "the worst of 3 members must exploit at least once in 8 rounds"
    for exploit in seen:
        assert exploit["in_force"] == exploit["explored"]
        assert exploit["same_weights"]
        assert not exploit["own"]
