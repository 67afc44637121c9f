"""The life of a resource key (worker/schedule/port.py), on Redis and in memory: FIFO, exactly once, leases that
expire and are taken over, offers and drainers, retries as due times, transactions that park and complete,
poison jobs, and Redis losing its data."""

from __future__ import annotations

from tests.schedule.conftest import LEASE, Backend
from worker.schedule.port import Arrival, DrainerLimits, Finished, Step
from worker.schedule.states import KeyState, MarkKind

A, B = "default/Patient/a", "default/Patient/b"  # queue keys: the default tenant's
LIMITS = DrainerLimits(cap=2, stale_seconds=60.0)


def _done(*job_ids: str) -> list[Finished]:
    return [Finished(job_id, "applied", 0.01, client="c") for job_id in job_ids]


def _acquire(backend: Backend, key: str, holder: str = "w1") -> tuple[str, list[str]]:
    token = backend.schedule.new_token(holder)
    heads = backend.schedule.next_jobs([Step(key, token, [], acquire=True)], LEASE, 50)[0]
    assert heads is not None, f"{key}: the lease was free"
    return token, [job_id for job_id, _ in heads.jobs]


def test_jobs_come_in_arrival_order_and_leave_once_each(backend: Backend) -> None:
    s, now = backend.schedule, backend.now()
    assert s.arrive(A, "j1", "p1", now) is Arrival.SEND_DRAIN, "an idle key: the caller offers it"
    assert s.arrive(A, "j2", "p2", now) is Arrival.QUEUED, "a drain is owed already"
    assert s.arrive(A, "j1", "p1", now) is Arrival.ALREADY, "never queued twice"
    assert s.view(A).state() is KeyState.OFFERED and s.queued("j1") and s.not_queued(["j1", "x"]) == ["x"]
    assert s.depths([A, "default/Patient/none", A]) == [2, 0, 2] and s.depths([]) == []
    token, jobs = _acquire(backend, A)
    assert jobs == ["j1", "j2"] and s.view(A).state() is KeyState.DRAINING
    heads = s.next_jobs([Step(A, token, _done("j2", "j1"))], LEASE, 50)[0]
    assert heads is not None and [j for j, _ in heads.jobs] == ["j2"], "only the head leaves: j2 was not at it"
    heads = s.next_jobs([Step(A, token, _done("j2", "j2"))], LEASE, 50)[0]
    assert heads is not None and heads.released, "the queue emptied: lease and mark released in the same step"
    assert s.view(A).state() is KeyState.IDLE and s.not_queued(["j1", "j2"]) == ["j1", "j2"]
    assert s.arrive(A, "j3", "p3", now) is Arrival.SEND_DRAIN


def test_a_lease_has_one_holder_until_it_expires_and_a_dead_holder_is_taken_over(backend: Backend) -> None:
    s, now = backend.schedule, backend.now()
    s.arrive(A, "j1", "p1", now)
    token, _ = _acquire(backend, A, "w1")
    assert s.next_jobs([Step(A, s.new_token("w2"), [], acquire=True)], LEASE, 50) == [None], "held by w1"
    assert s.next_jobs([Step(A, "forged", [])], LEASE, 50) == [None], "renewing needs the token"
    holder = s.lease_holder(A)
    assert holder is not None and holder[0] == "w1"
    assert s.take_over(A, "not-its-token", LEASE, "w2") is None
    taken = s.take_over(A, holder[1], LEASE, "w2")
    assert taken is not None and s.next_jobs([Step(A, token, [])], LEASE, 50) == [None], "w1's lease is gone"
    backend.expire_lease(A)
    assert s.lease_holder(A) is None and s.view(A).state() is KeyState.OFFERED, "the key still owes a drain"
    _, jobs = _acquire(backend, A, "w3")
    assert jobs == ["j1"], "the job at the head is still there for the next holder"


def test_releasing_with_jobs_left_keeps_the_drain_owed(backend: Backend) -> None:
    s, now = backend.schedule, backend.now()
    s.arrive(A, "j1", "p1", now)
    token, _ = _acquire(backend, A)
    assert s.release(A, token) is True and s.view(A).state() is KeyState.OFFERED
    token, _ = _acquire(backend, A)
    s.next_jobs([Step(A, token, _done("j1"))], LEASE, 50)
    assert s.release(A, token) is False and s.view(A).state() is KeyState.IDLE


def test_offers_start_drainers_up_to_the_cap_and_a_take_marks_keys_taken(backend: Backend) -> None:
    s, now = backend.schedule, backend.now()
    for n, key in enumerate(("default/Patient/1", "default/Patient/2", "default/Patient/3")):
        s.arrive(key, f"j{n}", "p", now)
    assert s.offer([], now, LIMITS) == [], "nothing waits: no drainer"
    first = s.offer(["default/Patient/1"], now, LIMITS)
    assert len(first) == 1 and len(s.offer(["default/Patient/2", "default/Patient/3"], now, LIMITS)) == 1
    assert s.offer([], now, LIMITS) == [] and s.waiting() == 3, "two live: the cap"
    items = s.take(first[0], "host:1", now)
    assert items == [["default/Patient/1"], ["default/Patient/2"]], "a fair share: 3 waiting over 2 drainers"
    assert s.view("default/Patient/2").taken_by == "host:1" and s.view("default/Patient/2").state() is KeyState.TAKEN
    assert s.resumed(first[0]) == ["default/Patient/1", "default/Patient/2"], "for a message that comes back"
    s.untake("default/Patient/2", "host:2")
    assert s.view("default/Patient/2").taken_by == "host:1", "only its own mark is forgotten"
    s.untake("default/Patient/2", "host:1")
    assert s.view("default/Patient/2").mark is None
    assert s.take(first[0], "host:1", now) == [["default/Patient/3"]]
    assert s.take(first[0], "host:1", now, "retire") == [] and s.resumed(first[0]) == []
    assert len(s.offer(["default/Patient/1"], now, LIMITS)) == 1, "a retired drainer no longer counts"


def test_a_transaction_offered_with_its_keys_comes_as_one_item(backend: Backend) -> None:
    s, now = backend.schedule, backend.now()
    assert sorted(s.arrive_transaction([A, B], "t1", "pt", now) or []) == [A, B]
    (drainer,) = s.offer([f"{A} {B}", A], now, DrainerLimits(cap=1, stale_seconds=60.0))
    assert s.take(drainer, "host:1", now) == [[A, B]], "a key offered twice comes once, with its transaction"


def test_a_failed_drain_is_retried_when_due_through_the_ready_list(backend: Backend) -> None:
    s, now = backend.schedule, backend.now()
    s.arrive(A, "j1", "p1", now)
    assert s.next_due() is None
    s.retry(A, now + 3600)
    assert s.next_due() == now + 3600
    view = s.view(A)
    assert view.mark is not None and view.mark.kind is MarkKind.RETRYING and view.state() is KeyState.RETRYING
    (drainer,) = s.offer([B], now, LIMITS)  # any item, so that a drainer is named
    assert s.take(drainer, "host:1", now) == [[B]], "A is not due yet: it is not handed out"
    s.retry(A, now - 1)
    assert s.take(drainer, "host:1", now) == [[A]], "due: it joins the ready list and is taken"
    assert s.view(A).taken_by == "host:1" and s.next_due() is None, "moved: no longer due"
    s.retry("default/Patient/idle", now - 1)
    assert s.take(drainer, "host:1", now) == [], "a key that owes no drain is not retried"


def test_a_transaction_runs_only_when_it_heads_every_queue_and_parks_the_others(backend: Backend) -> None:
    s, now = backend.schedule, backend.now()
    s.arrive(B, "j0", "p0", now)
    s.arrive_transaction([A, B], "t1", "pt", now)
    s.arrive(A, "j2", "p2", now)
    token_a, jobs_a = _acquire(backend, A)
    assert jobs_a == ["t1", "j2"] and not s.hold([A, B], token_a, "t1", LEASE), "j0 still heads B"
    s.park(A, token_a)
    assert s.view(A).state() is KeyState.PARKED
    token_b, _ = _acquire(backend, B)
    s.next_jobs([Step(B, token_b, _done("j0"))], LEASE, 50)
    assert s.hold([A, B], token_b, "t1", LEASE), "it heads both queues now: every lease is its"
    more = s.complete_transaction([A, B], token_b, Finished("t1", "applied", 0.1, client="c"), now)
    assert more == [A] and s.view(A).state() is KeyState.OFFERED and s.view(B).state() is KeyState.IDLE
    assert s.complete_transaction([A, B], token_b, Finished("t1", "applied", 0.1), now) == [A], "again: no-op"
    _, jobs = _acquire(backend, A)
    assert jobs == ["j2"]


def test_a_poison_job_counts_one_attempt_per_cause(backend: Backend) -> None:
    s = backend.schedule
    assert s.attempt("j1", "died:w1") == 1
    assert s.attempt("j1", "died:w1") == 1, "one death, however many of its keys are taken over"
    assert s.attempt("j1", "failed:x") == 2 and s.attempt("j2", "died:w1") == 1


def test_after_redis_lost_its_data_new_jobs_wait_behind_the_rebuilt_ones(backend: Backend) -> None:
    s, now = backend.schedule, backend.now()
    s.arrive(A, "j1", "p1", now)
    backend.lose_everything()
    assert not s.synced("default") and s.arrive(A, "j3", "p3", now) is Arrival.HELD, "Redis may have lost jobs: held"
    assert s.arrive_transaction([A, B], "t4", "p4", now) is None
    assert s.view(A).depth == 0
    assert s.rebuild(A, [("j1", "p1"), ("j2", "p2"), ("j3", "p3")], now) is True, "MongoDB's jobs in flight"
    assert sorted(s.finish_sync("default", now)) == [B], "A was offered with its rebuild"
    assert s.synced("default") and s.arrive(A, "j5", "p5", now) is Arrival.QUEUED
    _, jobs = _acquire(backend, A)
    assert jobs == ["j1", "j2", "j3", "t4", "j5"]
    _, jobs = _acquire(backend, B)
    assert jobs == ["t4"]


def test_a_rebuild_waits_for_a_drain_holding_the_key(backend: Backend) -> None:
    s, now = backend.schedule, backend.now()
    s.arrive(A, "j1", "p1", now)
    token, _ = _acquire(backend, A)
    assert s.rebuild(A, [("j1", "p1")], now) is None
    s.release(A, token)
    assert s.rebuild(A, [("j1", "p1")], now) is True


def test_a_heartbeat_says_a_process_lives_until_it_stops(backend: Backend) -> None:
    s = backend.schedule
    s.heartbeat("host:9", 60)
    assert s.alive("host:9") and not s.alive("host:10")
    assert s.lock("L", 60_000) and not s.lock("L", 60_000)
    s.unlock("L")
    assert s.lock("L", 60_000)


def test_each_tenant_is_restored_on_its_own(backend: Backend) -> None:
    """A tenant whose registry cannot be read yet stays held; the other, restored, takes jobs again at once."""
    s, now = backend.schedule, backend.now()
    other = "other/Patient/a"  # the same resource id in another tenant: another queue
    backend.lose_everything()
    assert s.arrive(A, "j1", "p1", now) is Arrival.HELD and s.arrive(other, "k1", "q1", now) is Arrival.HELD
    assert s.finish_sync("default", now) == [A], "only the default tenant's held job is queued"
    assert s.synced("default") and not s.synced("other")
    assert s.arrive(A, "j2", "p2", now) is Arrival.QUEUED and s.arrive(other, "k2", "q2", now) is Arrival.HELD
    assert s.view(other).depth == 0 and s.depths([A]) == [2]
    assert s.finish_sync("other", now) == [other]
    _, jobs = _acquire(backend, other)
    assert jobs == ["k1", "k2"], "the other tenant's jobs, in arrival order, in its own queue"


def test_a_server_that_took_over_is_noticed_once_and_dated(backend: Backend) -> None:
    schedule = backend.schedule
    assert schedule.served_since(100.0) == 0.0, "the first server seen"
    assert schedule.served_since(200.0) == 0.0
    backend.fail_over(300.0)
    assert schedule.served_since(300.0) == 300.0, "a failover, seen now"
    assert schedule.served_since(400.0) == 300.0, "and dated from when it was first seen"


def test_drainers_not_seen_since_a_failover_no_longer_count(backend: Backend) -> None:
    s, now = backend.schedule, backend.now()
    for n, key in enumerate(("default/Patient/1", "default/Patient/2", "default/Patient/3")):
        s.arrive(key, f"j{n}", "p", now)
    assert len(s.offer(["default/Patient/1", "default/Patient/2"], now, LIMITS)) == 2
    assert s.offer(["default/Patient/3"], now, LIMITS) == [], "two counted: the cap"
    s.drainers_gone_before(now + 1)  # their messages died with the old master
    assert len(s.offer([], now + 1, LIMITS)) == 2, "new drainers for what waits"


def test_a_claim_takes_only_an_idle_key_and_what_arrives_meanwhile_queues_behind_it(backend: Backend) -> None:
    s, now = backend.schedule, backend.now()
    token = s.new_token("api")
    assert s.claim(A, token, LEASE, now) is not None, "idle: claimed"
    assert s.claim(A, s.new_token("api2"), LEASE, now) is None, "claimed once"
    assert s.next_jobs([Step(A, s.new_token("w1"), [], acquire=True)], LEASE, 50) == [None], "no drain takes it"
    assert s.arrive(A, "j1", "p1", now) is Arrival.QUEUED, "queued behind the claim, with no offer of its own"
    assert s.view(A).state() is KeyState.DRAINING
    assert s.settle(A, token, Finished("c1", "applied", 0.01), now) is True, "jobs arrived: the caller offers it"
    assert s.view(A).state() is KeyState.OFFERED
    _, jobs = _acquire(backend, A)
    assert jobs == ["j1"]
    assert s.claim(A, s.new_token("api"), LEASE, now) is None, "jobs queued (and a lease held): not idle"
    token = s.new_token("api")
    assert s.claim(B, token, LEASE, now) is not None
    assert s.settle(B, token, Finished("c2", "failed", 0.01), now) is False and s.view(B).state() is KeyState.IDLE
    assert s.arrive(B, "j2", "p2", now) is Arrival.SEND_DRAIN, "an idle key owes no drain"


def test_a_claim_needs_the_realm_in_sync_and_one_that_expired_leaves_the_key_to_its_next_holder(
    backend: Backend,
) -> None:
    s, now = backend.schedule, backend.now()
    token = s.new_token("api")
    assert s.claim(A, token, LEASE, now) is not None
    backend.expire_lease(A)
    assert s.arrive(A, "j1", "p1", now) is Arrival.QUEUED, "the claim's mark still stands for a drain owed"
    view = s.view(A)
    assert view.state() is KeyState.OFFERED and view.mark is not None and view.mark.kind is MarkKind.OFFERED
    drainer, jobs = _acquire(backend, A)
    assert jobs == ["j1"]
    assert s.settle(A, token, Finished("c1", "applied", 0.01), now) is False, "the claim was lost"
    assert s.lease_holder(A) is not None and s.view(A).state() is KeyState.DRAINING, "the drain keeps its lease"
    backend.lose_everything()
    assert s.claim(B, s.new_token("api"), LEASE, now) is None, "out of sync: an empty queue proves nothing"
