"""A user's own exploit, explore and inheritance strategies: subclasses that work in a run
with worker processes, and over HTTP only when the server allows their package."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

import pbtkit as pk
from pbtkit.core.exploit import exploiter_from_dict
from pbtkit.core.explore import explorer_from_dict
from pbtkit.core.inheritance import inherit_from_dict
from pbtkit.core.policy import PBT
from pbtkit.service import PBTServer, RemoteController
from pbtkit.spec import ExperimentSpec
from tests.plugins import CopyTheBest, Halve, Scale
from tests.service.helpers import KEY, auth, check_error, sqlite_url


def test_a_users_classes_write_specs_that_read_back() -> None:
    assert CopyTheBest(0.5).to_dict() == {"type": "tests.plugins:CopyTheBest", "margin": 0.5}
    assert exploiter_from_dict(CopyTheBest(0.5).to_dict()) == CopyTheBest(0.5)
    assert explorer_from_dict(Halve(0.2).to_dict()) == Halve(0.2)
    assert inherit_from_dict(Scale(0.3).to_dict()) == Scale(0.3)
    with pytest.raises(pk.ConfigError, match="unknown bogus"):
        exploiter_from_dict({"type": "tests.plugins:CopyTheBest", "bogus": 1})
    with pytest.raises(pk.ConfigError, match="not a subclass of Exploiter"):
        exploiter_from_dict({"type": "tests.plugins:Halve"})


@pytest.mark.slow
def test_a_users_strategies_drive_a_run_of_worker_processes(tmp_path: Path) -> None:
    result = pk.run(
        "tests.trainers:climb",
        space={"x": pk.Uniform(0.1, 1.0)},
        metric="score",
        population=4,
        workers=2,
        ready_every=2,
        total_steps=8,
        evolution="generational",
        exploit=CopyTheBest(),
        explore=Halve(floor=0.1),
        initial=[{"x": 0.2}, {"x": 0.4}, {"x": 0.6}, {"x": 1.0}],
        storage=sqlite_url(tmp_path),
        name="plugins",
        progress=False,
    )
    assert result.spec.policy.exploit == CopyTheBest()
    assert result.spec.policy.explore == Halve(floor=0.1)
    exploits = result.exploits
    assert exploits
    trials = {t.id: t for t in result.trials}
    for event in exploits:
        donor = trials[event.donor_trial or 0]
        # the best of its generation was copied, with its x halved
        same = [t for t in result.trials if t.generation == donor.generation and t.status == "done"]
        assert donor.score == max(t.score for t in same)
        assert (event.new_hparams or {})["x"] == pytest.approx(max(0.1, donor.hparams["x"] / 2))


def test_a_users_weight_transform_is_applied_where_the_weights_are_loaded(tmp_path: Path) -> None:
    policy = PBT(pk.Objective("score"), ready_every=1, total_steps=2, inherit=Scale(0.25))
    assert PBT.from_dict(policy.to_dict()).inherit == Scale(0.25)
    from pbtkit.controller import Lease
    from pbtkit.store import TrialRecord
    from pbtkit.worker import Trial

    record = TrialRecord(
        id=7, experiment_id=1, member=0, generation=1, hparams={}, parent_id=3,
        start_step=1, end_step=2, inherit=Scale(0.25).record(),
    )  # fmt: skip
    lease = Lease(record, "e", "score", str(tmp_path), None, 1, 0.0)
    trial = Trial(lease, tmp_path, None)
    out = trial.inherited({"w": np.array([4.0, 8.0])})
    assert out["w"].tolist() == [1.0, 2.0]


def _spec() -> dict[str, object]:
    return ExperimentSpec(
        space=pk.SearchSpace({"x": pk.Uniform(0.1, 1.0)}),
        policy=PBT(pk.Objective("score"), exploit=CopyTheBest(), ready_every=1, total_steps=2),
        population=2,
        checkpoint_root="unused",
    ).to_dict()


def test_a_server_builds_a_users_class_only_when_its_package_is_allowed(tmp_path: Path) -> None:
    with (
        PBTServer(0, KEY, storage=sqlite_url(tmp_path, "a.db"), checkpoint_root=tmp_path) as closed,
        httpx.Client(base_url=closed.url, headers=auth(), timeout=30) as http,
    ):
        response = http.post("/v1/experiments", json={"name": "mine", "spec": _spec()})
        check_error(response, 400, "ConfigError", "tests.plugins:CopyTheBest")
    with (
        PBTServer(
            0, KEY, storage=sqlite_url(tmp_path, "b.db"), checkpoint_root=tmp_path,
            allow_imports=("tests",),
        ) as open_,
        RemoteController(open_.url, KEY) as remote,
    ):  # fmt: skip
        remote.create("mine", ExperimentSpec.from_dict(_spec()))
        assert remote.spec("mine").policy.exploit == CopyTheBest()
