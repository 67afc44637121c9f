"""Two service stacks (an API and a worker each, as on two hosts) on one Redis and one MongoDB-protocol server,
behind "a balancer": each client starts on its own stack and moves to the other when one does not answer.

Under load, one stack is paused (SIGSTOP, every process) for four times the lease and resumed, so its worker
comes back holding leases that the other stack has taken over meanwhile; then that stack is killed (SIGKILL,
every process) and the load goes on through the other one. Every patch is retried under its Idempotency-Key
until acknowledged; afterwards each resource holds exactly its acknowledged patches, in order, once each."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ordered_load import OrderedLoad
from tests.support.service import FAST_RECOVERY, Service, running_service

PAUSE_SECONDS = 4 * float(FAST_RECOVERY["FHIR_PATCH_LEASE_SECONDS"])


@contextlib.contextmanager
def two_stacks(env: dict[str, str], tmp: Path) -> Iterator[tuple[Service, Service]]:
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
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
def test_two_stacks_keep_order_and_exactly_once_when_one_pauses_past_its_lease_then_dies(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    with two_stacks(isolated_env, tmp_path) as (first, second):
        load = OrderedLoad(first, resources=16, per_resource=24, clients=8, others=[second])
        load.create()

        def pause_then_kill() -> None:
            _signal_stack(second, signal.SIGSTOP)
            time.sleep(PAUSE_SECONDS)
            _signal_stack(second, signal.SIGCONT)
            time.sleep(2.0)  # the paused worker finds its leases taken over, under load
            _signal_stack(second, signal.SIGKILL)

        load.run(pause_then_kill)
        report = load.report(load.applied_values())
        report["longest_time_without_a_202_s"] = round(load.longest_silence(), 1)
    print(json.dumps(report))
    assert report["not_acknowledged"] == 0, report
    assert report["fifo_violations"] == 0 and report["duplicates"] == 0, report
    assert report["unfinished"] == 0, report
