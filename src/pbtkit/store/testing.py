"""The store contract, shipped with pbtkit so that every backend is held to it.

Use it by subclassing :class:`StoreContract` in a test module and giving it a ``store``
fixture that yields a fresh, empty store::

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self, tmp_path):
            with MyStore(tmp_path / "db") as s:
                yield s

Requires pytest.
"""

from __future__ import annotations

import dataclasses
import math
import threading

import pytest

from pbtkit._exceptions import ExperimentConflict, NotFound
from pbtkit.store._base import EventRecord, MemberRecord, ReportRecord, Store, TrialRecord

__all__ = ["StoreContract"]


def _trial(experiment_id: int, member: int = 0, generation: int = 0, **kw: object) -> TrialRecord:
    fields: dict[str, object] = {
        "id": 0,
        "experiment_id": experiment_id,
        "member": member,
        "generation": generation,
        "hparams": {"lr": 0.1, "act": "relu", "layers": 2},
        "parent_id": None,
        "start_step": 0,
        "end_step": 10,
        "created_at": 1.0,
    }
    fields.update(kw)
    return TrialRecord(**fields)  # type: ignore[arg-type]


class StoreContract:
    """Behaviour every :class:`~pbtkit.store.Store` must show. Subclass and add ``store``."""

    def _experiment(self, store: Store, name: str = "exp") -> int:
        with store.transaction() as tx:
            return tx.create_experiment(name, {"population": 2, "nested": {"a": [1, 2]}}, 5.0).id

    def test_experiment_roundtrip_and_unique_name(self, store: Store) -> None:
        eid = self._experiment(store)
        with store.read() as tx:
            found = tx.get_experiment("exp")
            assert found is not None
            assert found.id == eid
            assert found.config == {"population": 2, "nested": {"a": [1, 2]}}
            assert found.status == "running"
            assert tx.get_experiment("nope") is None
        with pytest.raises(ExperimentConflict, match="already exists"), store.transaction() as tx:
            tx.create_experiment("exp", {}, 6.0)
        with store.transaction() as tx:
            tx.set_experiment_status(eid, "finished")
            tx.create_experiment("other", {}, 7.0)
        with store.read() as tx:
            assert [e.name for e in tx.list_experiments()] == ["exp", "other"]
            assert tx.list_experiments()[0].status == "finished"

    def test_trial_roundtrip_keeps_every_field(self, store: Store) -> None:
        eid = self._experiment(store)
        with store.transaction() as tx:
            written = tx.insert_trial(
                _trial(
                    eid,
                    metrics={"loss": math.nan, "acc": 0.5, "up": math.inf},
                    score=0.5,
                    lease_owner="w1",
                    lease_expires=12.5,
                    checkpoint="exp/trial-1",
                    error="boom",
                    not_before=99.5,
                    checkpoint_bad=True,
                )
            )
        assert written.id > 0
        with store.read() as tx:
            back = tx.get_trial(written.id)
        assert (back.not_before, back.checkpoint_bad) == (99.5, True)
        assert back.hparams == {"lr": 0.1, "act": "relu", "layers": 2}
        assert math.isnan(back.metrics["loss"])
        assert back.metrics["acc"] == 0.5
        assert back.metrics["up"] == math.inf
        assert (back.lease_owner, back.lease_expires, back.checkpoint, back.error) == (
            "w1",
            12.5,
            "exp/trial-1",
            "boom",
        )
        with pytest.raises(NotFound), store.read() as tx:
            tx.get_trial(written.id + 1000)

    def test_nan_score_survives(self, store: Store) -> None:
        eid = self._experiment(store)
        with store.transaction() as tx:
            tid = tx.insert_trial(_trial(eid, score=math.nan)).id
        with store.read() as tx:
            assert math.isnan(tx.get_trial(tid).score)

    def test_ids_increase_and_filters(self, store: Store) -> None:
        eid = self._experiment(store)
        with store.transaction() as tx:
            ids = [
                tx.insert_trial(_trial(eid, member=m % 2, generation=m // 2)).id for m in range(6)
            ]
        assert ids == sorted(ids)
        assert len(set(ids)) == 6
        with store.read() as tx:
            assert [t.id for t in tx.trials(eid, member=1)] == ids[1::2]
            assert [t.id for t in tx.trials(eid, generation=2)] == ids[4:]
            assert tx.trials(eid, statuses=("running",)) == []
            assert len(tx.trials(eid, statuses=("pending", "done"))) == 6
            assert tx.count_trials(eid, ("pending",)) == 6
            assert tx.count_trials(eid, ("pending",), generation=1) == 2
            assert tx.count_trials(eid, ("running", "done")) == 0

    def test_next_pending_is_lowest_generation_then_id(self, store: Store) -> None:
        eid = self._experiment(store)
        with store.transaction() as tx:
            late = tx.insert_trial(_trial(eid, member=0, generation=1))
            early = tx.insert_trial(_trial(eid, member=1, generation=0))
            tx.insert_trial(_trial(eid, member=2, generation=0))
        with store.read() as tx:
            first = tx.next_pending(eid)
        assert first is not None
        assert first.id == early.id
        with store.transaction() as tx:
            for t in tx.trials(eid, generation=0):
                tx.update_trial(dataclasses.replace(t, status="done"), expect_status="pending")
        with store.read() as tx:
            nxt = tx.next_pending(eid)
        assert nxt is not None
        assert nxt.id == late.id

    def test_priority_orders_within_a_generation(self, store: Store) -> None:
        eid = self._experiment(store)
        with store.transaction() as tx:
            tx.insert_trial(_trial(eid, member=0, priority=0.9))
            second = tx.insert_trial(_trial(eid, member=1, priority=0.1))
            tx.insert_trial(_trial(eid, member=2, generation=1, priority=0.0))
        with store.read() as tx:
            first = tx.next_pending(eid)
        assert first is not None
        assert first.id == second.id

    def test_a_trial_held_back_is_not_pending_until_its_time(self, store: Store) -> None:
        eid = self._experiment(store)
        with store.transaction() as tx:
            held = tx.insert_trial(_trial(eid, member=0, priority=0.0, not_before=100.0))
            free = tx.insert_trial(_trial(eid, member=1, priority=0.5))
        with store.read() as tx:
            for kwargs in ({}, {"member": 0}, {"generation": 0}):
                assert tx.next_pending(eid, **kwargs) == held  # type: ignore[arg-type]
            soon = tx.next_pending(eid, now=99.0)
            assert soon is not None
            assert soon.id == free.id
            assert tx.next_pending(eid, member=0, now=99.0) is None
            due = tx.next_pending(eid, generation=0, now=100.0)
            assert due is not None
            assert due.id == held.id
        with store.transaction() as tx:
            claimed = tx.next_pending(eid, claim=True, now=50.0)
            assert claimed is not None
            assert claimed.id == free.id

    def test_next_pending_of_one_member_or_generation(self, store: Store) -> None:
        eid = self._experiment(store)
        with store.transaction() as tx:
            tx.insert_trial(_trial(eid, member=0, generation=0))
            mine = tx.insert_trial(_trial(eid, member=1, generation=3))
            tx.insert_trial(_trial(eid, member=2, generation=1))
        with store.read() as tx:
            found = tx.next_pending(eid, member=1)
            assert found is not None
            assert found.id == mine.id
            assert tx.next_pending(eid, member=7) is None
            later = tx.next_pending(eid, generation=1)
            assert later is not None
            assert later.member == 2

    def test_update_is_compare_and_set(self, store: Store) -> None:
        eid = self._experiment(store)
        with store.transaction() as tx:
            t = tx.insert_trial(_trial(eid))
        running = dataclasses.replace(t, status="running", lease_owner="a")
        with store.transaction() as tx:
            assert tx.update_trial(running, expect_status="pending") is True
        stolen = dataclasses.replace(t, status="running", lease_owner="b")
        with store.transaction() as tx:
            assert tx.update_trial(stolen, expect_status="pending") is False
        with store.read() as tx:
            assert tx.get_trial(t.id).lease_owner == "a"

    def test_concurrent_claims_never_give_one_trial_twice(self, store: Store) -> None:
        eid = self._experiment(store)
        with store.transaction() as tx:
            for m in range(20):
                tx.insert_trial(_trial(eid, member=m))
        claimed: list[int] = []
        lock = threading.Lock()

        def claim(owner: str) -> None:
            while True:
                with store.transaction() as tx:
                    tx.lock_experiment(eid)
                    t = tx.next_pending(eid)
                    if t is None:
                        return
                    won = tx.update_trial(
                        dataclasses.replace(t, status="running", lease_owner=owner),
                        expect_status="pending",
                    )
                if won:
                    with lock:
                        claimed.append(t.id)

        threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert len(claimed) == 20
        assert len(set(claimed)) == 20

    def test_failed_transaction_leaves_no_trace(self, store: Store) -> None:
        eid = self._experiment(store)

        class BoomError(Exception):
            pass

        with pytest.raises(BoomError), store.transaction() as tx:
            tx.insert_trial(_trial(eid))
            tx.put_members([MemberRecord(eid, 0)])
            tx.add_events([EventRecord(eid, 0, "continue")])
            raise BoomError
        with store.read() as tx:
            assert tx.trials(eid) == []
            assert tx.members(eid) == []
            assert tx.events(eid) == []

    def test_members_upsert(self, store: Store) -> None:
        eid = self._experiment(store)
        with store.transaction() as tx:
            tx.put_members([MemberRecord(eid, 1), MemberRecord(eid, 0)])
        with store.transaction() as tx:
            tx.put_members([MemberRecord(eid, 1, "done", 7, 20, 0.25, {"lr": 0.5}, "exp/trial-7")])
        with store.read() as tx:
            ms = tx.members(eid)
        assert [m.member for m in ms] == [0, 1]
        assert ms[1] == MemberRecord(eid, 1, "done", 7, 20, 0.25, {"lr": 0.5}, "exp/trial-7")
        assert math.isnan(ms[0].score)

    def test_members_carry_metrics(self, store: Store) -> None:
        eid = self._experiment(store)
        record = MemberRecord(eid, 0, score=0.5, metrics={"acc": 0.5, "loss": math.nan})
        with store.transaction() as tx:
            tx.put_members([record])
        with store.read() as tx:
            (stored,) = tx.members(eid)
        assert stored.metrics["acc"] == 0.5
        assert math.isnan(stored.metrics["loss"])

    def test_members_since_reads_only_changes(self, store: Store) -> None:
        eid = self._experiment(store)
        other = self._experiment(store, "other")
        with store.transaction() as tx:
            tx.put_members([MemberRecord(eid, m) for m in range(4)])
            tx.put_members([MemberRecord(other, 0)])
        with store.read() as tx:
            first, everyone = tx.members_since(eid, -1)
        assert [m.member for m in everyone] == [0, 1, 2, 3]
        with store.transaction() as tx:
            tx.put_members([MemberRecord(eid, 2, step=10, score=1.0)])
        with store.transaction() as tx:
            tx.put_members([MemberRecord(eid, 3, step=10), MemberRecord(eid, 2, step=20)])
            tx.put_members([MemberRecord(other, 0, step=5)])  # another experiment's
        with store.read() as tx:
            now, changed = tx.members_since(eid, first)
            again, nothing = tx.members_since(eid, now)
        assert now > first
        assert again == now
        assert nothing == []
        assert [(m.member, m.step) for m in changed] == [(2, 20), (3, 10)]

    def test_children_count(self, store: Store) -> None:
        eid = self._experiment(store)
        with store.transaction() as tx:
            parent = tx.insert_trial(_trial(eid, status="done"))
            tx.insert_trial(_trial(eid, parent_id=parent.id))
            tx.insert_trial(_trial(eid, parent_id=parent.id, status="done"))
        with store.read() as tx:
            assert tx.children_count(parent.id, ("pending", "running")) == 1
            assert tx.children_count(parent.id, ("done",)) == 1

    def test_reports_and_events(self, store: Store) -> None:
        eid = self._experiment(store)
        with store.transaction() as tx:
            t1 = tx.insert_trial(_trial(eid, member=0)).id
            t2 = tx.insert_trial(_trial(eid, member=1)).id
            tx.add_reports(
                eid,
                [ReportRecord(t1, 0, s, {"loss": 1.0 / (s + 1)}) for s in range(3)]
                + [ReportRecord(t2, 1, 0, {"loss": math.nan})],
            )
            tx.add_events(
                [
                    EventRecord(eid, 0, "continue", trial_id=t1),
                    EventRecord(
                        eid,
                        1,
                        "exploit",
                        trial_id=t2,
                        donor_member=0,
                        donor_trial=t1,
                        old_hparams={"lr": 0.1},
                        new_hparams={"lr": 0.12},
                        at=3.0,
                    ),
                ]
            )
        with store.read() as tx:
            assert [r.step for r in tx.reports(eid, member=0)] == [0, 1, 2]
            assert math.isnan(tx.reports(eid, trial_id=t2)[0].metrics["loss"])
            exploit = tx.events(eid, kind="exploit")
            assert len(exploit) == 1
            assert exploit[0].new_hparams == {"lr": 0.12}
            assert exploit[0].donor_trial == t1
            assert tx.count_events(eid, "exploit") == 1
            assert tx.count_events(eid, "stop") == 0
        with store.transaction() as tx:
            tx.delete_reports(t1)
        with store.read() as tx:
            assert tx.reports(eid, member=0) == []
            assert len(tx.reports(eid)) == 1

    def test_experiments_are_isolated(self, store: Store) -> None:
        a = self._experiment(store, "a")
        b = self._experiment(store, "b")
        with store.transaction() as tx:
            tx.insert_trial(_trial(a))
        with store.read() as tx:
            assert tx.trials(b) == []
            assert tx.next_pending(b) is None
