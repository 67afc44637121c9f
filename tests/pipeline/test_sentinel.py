"""A Redis failover under load, with Sentinel (what `make run` starts with FHIR_PATCH_LOCAL_REDIS=sentinel): the
master is SIGKILLed mid-load, the Sentinels promote the replica, and the service follows it by itself.
Afterwards: 0 lost, 0 duplicated, 0 order violations, nothing unfinished, and intake never more than 30 s
without acknowledging a patch. The old master then comes back and rejoins as a replica, as an operator would
bring it back."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.ordered_load import OrderedLoad
from tests.support.processes import provision_module, wait_for
from tests.support.service import Service, running_service

RECOVERY_SECONDS = 30  # the bound: the service acknowledges again within this long of the kill


@pytest.fixture()
def sentinel_set(tmp_path: Path) -> Iterator[tuple[dict[str, str], object, object]]:
    """A master, a replica and three Sentinels of this test's own (provision.start_sentinel_set)."""
    provision = provision_module()
    procs = provision.Processes()
    try:
        yield provision.start_sentinel_set(procs, tmp_path / "redis"), procs, provision
    finally:
        procs.stop_all()


def _sentinel(env: dict[str, str]) -> redis.Redis:
    host, port = env["FHIR_PATCH_REDIS_SENTINELS"].split(",")[0].rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), socket_timeout=2, decode_responses=True)


def _master(env: dict[str, str]) -> tuple[str, int]:
    host, port = _sentinel(env).execute_command("SENTINEL", "get-master-addr-by-name", "fhirpatch")
    return str(host), int(port)


@pytest.mark.services
def test_a_sentinel_failover_under_load_loses_duplicates_and_reorders_nothing(
    isolated_env: dict[str, str], sentinel_set: tuple[dict[str, str], object, object], tmp_path: Path
) -> None:
    redis_env, procs, provision = sentinel_set
    wait_for(
        lambda: redis.Redis(port=_master(redis_env)[1]).info("replication")["connected_slaves"] == 1, 30, "a replica"
    )
    env = {**isolated_env, **redis_env, "FHIR_PATCH_REDIS_WAIT_MS": "200"}
    with running_service(env, tmp_path, workers=2) as service:
        load = OrderedLoad(service, resources=16, per_resource=24, clients=8)
        load.create()
        facts: dict[str, float] = {}
        load.run(lambda: facts.update(_fail_over(service, redis_env, procs, provision, load, tmp_path)))
        report = load.report(load.applied_values())
        report |= {k: round(v, 1) for k, v in facts.items()}
        report["longest_time_without_a_202_s"] = round(load.longest_silence(), 1)
    print(json.dumps(report))
    assert facts["promoted"] == 1, "the Sentinels promoted the replica"
    assert report["not_acknowledged"] == 0, report
    assert report["fifo_violations"] == 0 and report["duplicates"] == 0, report
    assert report["unfinished"] == 0, report
    assert report["longest_time_without_a_202_s"] < RECOVERY_SECONDS, report


def _fail_over(
    service: Service, env: dict[str, str], procs: object, provision: object, load: OrderedLoad, tmp: Path
) -> dict[str, float]:
    """Kill the master mid-load; wait for the promotion; bring the old master back (it rejoins as a replica)."""
    host, port = _master(env)
    pid = int(redis.Redis(host=host, port=port).info("server")["process_id"])
    acknowledged = sum(load.acknowledged.values())
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _master(env)[1] != port, RECOVERY_SECONDS, "the Sentinels to promote the replica")
    promoted_at = time.monotonic()
    binary = provision.helper("ensure-redis.sh")  # type: ignore[attr-defined]
    argv = provision._redis_argv(binary, port, tmp / "redis" / "redis-master", False)  # type: ignore[attr-defined]
    procs.start("redis-master-again", argv, tmp / "redis" / "redis-master-again.log")  # type: ignore[attr-defined]
    return {
        "promoted": 1.0,
        "promoted_after_s": promoted_at - killed_at,
        "acknowledged_before_kill": float(acknowledged),
    }
