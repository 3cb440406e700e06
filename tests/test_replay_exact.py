"""Replay reproduces a lineage's weights bit for bit, async exploits and shrink-and-perturb
included.

The digits example (numpy MLP) is run for real, asynchronously, on two worker processes;
its best member's schedule is replayed from scratch with the same training function, and
the replay's final weights must equal the run's exactly. That holds because steps follow
the weights (a copy goes on from the step its donor's checkpoint reached, so the replay
trains the very steps the run did) and the replay applies shrink-and-perturb where the
run did, with the same seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pbtkit as pk
from pbtkit.examples import digits

pytestmark = pytest.mark.slow


def _weights(folder: Path | str | None) -> dict[str, np.ndarray]:
    assert folder is not None
    with np.load(Path(folder) / "model.npz", allow_pickle=False) as saved:
        return {k: saved[k] for k in saved.files}


def _replay_matches(result: pk.Result, tmp_path: Path) -> pk.Schedule:
    schedule = result.schedule()
    replayed = pk.replay(digits.train, schedule, checkpoint_dir=tmp_path / "replay")
    assert replayed.end_step == result.best.step
    original, again = _weights(result.best.checkpoint), _weights(replayed.checkpoint)
    assert original.keys() == again.keys()
    for name in original:
        assert np.array_equal(original[name], again[name]), f"{name} differs"
    return schedule


def _copies(result: pk.Result, schedule: pk.Schedule) -> int:
    """How many exploits the replayed lineage crosses."""
    return sum(
        1
        for before, after in zip(schedule.trials, schedule.trials[1:], strict=False)
        if before.member != after.member
    )


@pytest.mark.parametrize("seed", range(5))
def test_replay_reproduces_an_async_digits_run_bit_for_bit(tmp_path: Path, seed: int) -> None:
    result = digits.main(
        tmp_path, progress=False, name="digits", population=4, total_steps=6, seed=seed
    )
    assert result.exploits, "the test needs a run with exploits"
    schedule = _replay_matches(result, tmp_path)
    trials = {t.id: t for t in result.trials}
    for node in schedule.trials:  # the replay trained the run's own steps
        assert (node.start_step, node.end_step) == (
            trials[node.trial_id].start_step,
            trials[node.trial_id].end_step,
        )


def test_replay_reproduces_a_shrink_and_perturb_lineage_bit_for_bit(tmp_path: Path) -> None:
    result = digits.main(
        tmp_path,
        progress=False,
        name="digits-sp",
        population=4,
        total_steps=8,
        evolution="generational",
        exploit=pk.Truncation(0.5),
        inherit=pk.ShrinkPerturb(0.6, 0.02),
    )
    schedule = _replay_matches(result, tmp_path)
    shrunk = [node for node in schedule.trials if node.inherit is not None]
    assert shrunk, "the best lineage must cross a shrink-and-perturb exploit"
    assert _copies(result, schedule) >= 1
