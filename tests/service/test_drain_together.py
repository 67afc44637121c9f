"""Draining several keys together: their single jobs applied in combined steps, every other case drained alone, a
collision stopping only its own key."""

from __future__ import annotations

from tests.service.conftest import Clock, patch, put, queue
from tests.service.conftest import drainer_of as _drainer
from tests.service.conftest import families as _families
from tests.support.memory_queues import MemoryQueues
from tests.support.memory_stores import MemoryStores
from worker.model.jobs import JobState
from worker.model.versions import StoredVersion
from worker.settings import Settings

KEYS = ["default/Patient/p", "default/Patient/q", "default/Patient/r"]  # queue keys: the default tenant's


def test_single_jobs_of_several_keys_are_applied_together(settings, stores, queues, clock) -> None:
    queue(stores, queues, put("p", "a", "j1"), put("q", "b", "j2"), put("r", "c", "j3"))
    done = _drainer(settings, stores, queues, clock).drain_together(KEYS)
    assert {key: (d.processed, d.more, d.held_elsewhere) for key, d in done.items()} == dict.fromkeys(
        KEYS, (1, False, False)
    )
    assert [_families(stores, key.removeprefix("default/")) for key in KEYS] == [["a"], ["b"], ["c"]]
    assert sorted(w["job"] for w in queues.wakeups.published) == ["j1", "j2", "j3"]
    assert sorted(f.job_id for f in queues.schedule.counted) == ["j1", "j2", "j3"], "each counted once"
    assert not queues.schedule.leases and all(queues.schedule.queues[key] == [] for key in KEYS), "leases released"
    assert [queues.copies.newest_version(key) for key in KEYS] == [1, 1, 1]


def test_a_key_with_more_queued_is_drained_alone_and_a_held_key_is_left_to_its_holder(
    settings: Settings, stores: MemoryStores, queues: MemoryQueues, clock: Clock
) -> None:
    queue(stores, queues, put("p", "a", "j1"), patch("p", "a2", "j2"), put("q", "b", "j3"), put("r", "c", "j4"))
    queues.schedule.lease_to("default/Patient/r", "w2|x")
    queues.schedule.heartbeat("w2", 3600)
    done = _drainer(settings, stores, queues, clock).drain_together(KEYS)
    assert (done["default/Patient/p"].processed, done["default/Patient/q"].processed) == (2, 1)
    assert done["default/Patient/r"].held_elsewhere and _families(stores, "Patient/r") == []
    assert _families(stores) == ["a", "a2"]


def test_a_collision_stops_only_its_own_key(settings, stores, queues, clock) -> None:
    drainer = _drainer(settings, stores, queues, clock)
    queue(stores, queues, put("q", "b", "j0"))
    drainer.drain("default/Patient/q")  # version 1, and its copy
    foreign = StoredVersion("Patient", "q", 2, clock(), '{"resourceType":"Patient","id":"q"}', "other", "update")
    stores.resources.stored["Patient/q/2"] = foreign  # written behind our back; the copy does not know it
    queue(stores, queues, put("p", "a", "j1"), put("q", "c", "j2"))
    done = drainer.drain_together(["default/Patient/p", "default/Patient/q"])
    assert done["default/Patient/p"].processed == 1 and stores.jobs.get("j1").state == JobState.APPLIED  # type: ignore[union-attr]
    assert done["default/Patient/q"].processed == 0 and queues.schedule.queues["default/Patient/q"] == ["j2"], (
        "left for the next holder"
    )
    assert done["default/Patient/q"].held_elsewhere, "its mark goes, so the reconciler revives it if no holder goes on"
    assert stores.resources.stored["Patient/q/2"].job_id == "other" and "Patient/q/3" not in stores.resources.stored


def test_a_redelivered_job_among_them_finds_the_version_it_wrote(settings, stores, queues, clock) -> None:
    queue(stores, queues, put("p", "a", "j1"), put("q", "b", "j2"))
    stores.jobs.start("j2", clock())  # its worker died after writing version 1, before recording the outcome
    written = StoredVersion("Patient", "q", 1, clock(), '{"resourceType":"Patient","id":"q"}', "j2", "update")
    stores.resources.stored["Patient/q/1"] = written
    done = _drainer(settings, stores, queues, clock).drain_together(["default/Patient/p", "default/Patient/q"])
    assert done["default/Patient/q"].processed == 1
    assert stores.jobs.get("j2").result.version_id == 1, "its own version is its result"  # type: ignore[union-attr]
    assert "default/Patient/q/2" not in stores.resources.stored, "not applied twice"


def test_a_key_offered_twice_is_drained_once_and_its_lease_released(settings, stores, queues, clock) -> None:
    queue(stores, queues, put("p", "a", "j1"), put("q", "b", "j2"))
    twice = ["default/Patient/p", "default/Patient/q", "default/Patient/p"]
    done = _drainer(settings, stores, queues, clock).drain_together(twice)
    assert done["default/Patient/p"].processed == 1 and not done["default/Patient/p"].held_elsewhere
    assert not queues.schedule.leases, "no lease left behind"


def test_creates_of_keys_with_no_copy_read_nothing_before_their_insert(settings, stores, queues, clock, monkeypatch):
    def unread(*_: object) -> None:
        raise AssertionError("a create of a key never seen must not read its newest version")

    monkeypatch.setattr(stores.resources, "uncopied", unread)
    monkeypatch.setattr(stores.resources, "latest", unread)
    queue(stores, queues, put("p", "a", "j1"), put("q", "b", "j2"))
    done = _drainer(settings, stores, queues, clock).drain_together(KEYS[:2])
    assert [d.processed for d in done.values()] == [1, 1]
    assert [stores.jobs.get(j).result.status for j in ("j1", "j2")] == [201, 201]  # type: ignore[union-attr]


def test_a_put_presumed_new_whose_resource_exists_uncopied_is_planned_again_on_it(
    settings, stores, queues, clock
) -> None:
    text = '{"resourceType":"Patient","id":"p","meta":{"tag":[{"code":"kept"}]},"name":[{"family":"a"}]}'
    stores.resources.stored["Patient/p/1"] = StoredVersion("Patient", "p", 1, clock(), text, "j0", "update")
    assert queues.copies.newest_version("default/Patient/p") == 0, "MongoDB alone holds it (its copy expired)"
    queue(stores, queues, put("p", "b", "j1"), put("q", "c", "j2"))
    done = _drainer(settings, stores, queues, clock).drain_together(KEYS[:2])
    assert [d.processed for d in done.values()] == [1, 1] and not any(d.held_elsewhere for d in done.values())
    result = stores.jobs.get("j1").result  # type: ignore[union-attr]
    assert (result.status, result.version_id) == (200, 2), "an update of version 1, not a lost lease"
    assert _families(stores) == ["a", "b"] and stores.resources.stored["Patient/p/2"].resource()["meta"]["tag"] == [
        {"code": "kept"}
    ], "planned on version 1: its tags carried forward"
    assert queues.copies.newest_version("default/Patient/p") == 2
