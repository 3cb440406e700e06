"""A bad checkpoint stays contained: it fails no healthy member.

A donor's checkpoint is deleted, or one of its files rewritten, while the run goes on. The
trials that were to start from it start from a good checkpoint instead (the member's own,
else the best member's), the events say so, the bad checkpoint is never a parent again and
is kept on disk to be examined, and every member finishes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import pbtkit as pk

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("how", ["delete", "corrupt"])
def test_a_broken_donor_checkpoint_fails_no_healthy_member(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setenv("PBTKIT_TEST_SABOTAGE", how)
    result = pk.run(
        "tests.trainers:sabotage_donor",
        space={"x": pk.Uniform(0.1, 1.0)},
        metric="score",
        population=4,
        workers=1,  # one trial at a time: which trials find it broken is known
        ready_every=2,
        total_steps=8,
        evolution="generational",
        exploit=pk.Truncation(0.25),
        initial=[{"x": 0.1}, {"x": 0.4}, {"x": 0.7}, {"x": 1.0}],
        storage=f"sqlite:///{tmp_path / 'pbt.db'}",
        name="sabotage",
        progress=False,
    )
    assert [m.status for m in result.members] == ["done"] * 4
    assert all(m.step == 8 for m in result.members)
    assert not [e for e in result.events if e.kind == "failed"]
    (marked,) = [e for e in result.events if e.kind == "bad_checkpoint"]
    assert marked.trial_id == 4
    assert marked.member == 3
    restarts = [e for e in result.events if e.kind == "restart"]
    assert restarts, "no trial was moved off the broken checkpoint"
    for event in restarts:
        assert "failed verification" in (event.detail or "")
        assert event.donor_trial != 4
    # generation 1: member 0 copied member 3 (the worst copies the best) and member 3
    # continued from its own; of the two, the one that ran after the sabotage moved
    by_id = {t.id: t for t in result.trials}
    moved = {e.trial_id for e in restarts}
    for trial_id in moved:
        trial = by_id[trial_id]
        assert trial.generation == 1
        assert trial.member in (0, 3)
        assert trial.parent_id != 4
        assert trial.status == "done"
    # never a parent again after it was found bad
    later = [t for t in result.trials if t.parent_id == 4 and t.id not in moved]
    assert all(t.started_at is not None and t.started_at < marked.at for t in later)
    bad = by_id[4]
    assert bad.checkpoint_bad
    root = Path(result.spec.checkpoint_root)
    if how == "corrupt":  # kept, as it was found, to be examined
        assert (root / str(bad.checkpoint) / "state.json").read_text() == '{"value": 1e9}'
