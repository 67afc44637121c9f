"""Two service stacks (an API and a worker each, as on two hosts) on one Redis and one MongoDB-protocol server,
behind "a balancer": each client starts on its own stack and moves to the other when one does not answer.

Under one load, the stack whose worker holds a lease is paused (SIGSTOP, every process) for four times the
lease and resumed, so its worker comes back holding leases that have expired (and been taken over). Under a
second load, on other resources, the second stack is killed (SIGKILL, every process) and the load goes on
through the first. Every patch is retried under its Idempotency-Key until acknowledged; afterwards each
resource holds exactly its acknowledged patches, in order, once each."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from devkit.procfs import descendants
from tests.support.ordered_load import OrderedLoad
from tests.support.processes import wait_for
from tests.support.service import FAST_RECOVERY, Service, running_service

PAUSE_SECONDS = 4 * float(FAST_RECOVERY["FHIR_PATCH_LEASE_SECONDS"])


@contextlib.contextmanager
def two_stacks(env: dict[str, str], tmp: Path) -> Iterator[tuple[Service, Service]]:
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    env = {**env, "FHIR_PATCH_DRAINERS": "2"}  # one worker of one pool process on each "host"
    with running_service(env, tmp / "a", workers=1) as first:
        assert first.issuer is not None
        with running_service({**env, **first.issuer.env()}, tmp / "b", workers=1) as second:  # trusts a's tokens
            yield first, second


def _signal_stack(stack: Service, signum: int) -> None:
    assert stack.api is not None
    for proc in [stack.api, *stack.workers]:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)


@pytest.mark.services
def test_two_stacks_keep_order_and_exactly_once_when_one_pauses_past_its_lease_or_dies(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    with two_stacks(isolated_env, tmp_path) as (first, second):
        paused: list[Service] = []

        def found_a_holder() -> bool:
            paused[:] = _holding_a_lease([first, second])[:1]
            return bool(paused)

        def pause() -> None:  # the stack whose worker holds a lease: it comes back after the lease expired
            wait_for(found_a_holder, 30, "a stack's worker to hold a lease", interval=0.01)
            _signal_stack(paused[0], signal.SIGSTOP)
            time.sleep(PAUSE_SECONDS)
            _signal_stack(paused[0], signal.SIGCONT)

        reports = {"paused": _load_through(first, second, "p", pause)}
        # Reported, not asserted: the lease seen may have been released just before the pause.
        reports["paused"]["paused_stack_said_lease_lost"] = sum(
            p.read_text().count("lease lost") for p in paused[0].log_dir.glob("worker*.log")
        )
        reports["killed"] = _load_through(first, second, "k", lambda: _signal_stack(second, signal.SIGKILL))
    print(json.dumps(reports))
    for report in reports.values():
        assert report["not_acknowledged"] == 0, reports
        assert report["fifo_violations"] == 0 and report["duplicates"] == 0, reports
        assert report["unfinished"] == 0, reports
    assert sum(n for why, n in reports["killed"]["retried"].items() if not why.isdigit()) > 0, (  # type: ignore[union-attr]
        "clients of the killed stack met it dead and went to the other"
    )


def _holding_a_lease(stacks: list[Service]) -> list[Service]:
    """The stacks a process of whose worker holds some resource's lease now (a lease token names its holder
    host:pid)."""
    env = stacks[0].env
    client = redis.Redis.from_url(env["FHIR_PATCH_REDIS_URL"], decode_responses=True)
    try:
        holders = {
            (client.get(key) or "").split("|", 1)[0].rpartition(":")[2]
            for key in client.scan_iter(f"{env['FHIR_PATCH_NAMESPACE']}:{{*}}:lease", count=1000)
        }
    finally:
        client.close()
    held = {int(pid) for pid in holders if pid.isdigit()}
    return [s for s in stacks if held & ({s.workers[0].pid} | descendants(s.workers[0].pid))]


def _load_through(first: Service, second: Service, prefix: str, fault: Callable[[], None]) -> dict[str, object]:
    load = OrderedLoad(first, resources=16, per_resource=24, clients=8, others=[second], prefix=prefix)
    load.create()
    load.run(fault)
    report = load.report(load.applied_values())
    report["longest_time_without_a_202_s"] = round(load.longest_silence(), 1)
    return report
