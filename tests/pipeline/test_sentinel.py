"""A Redis failover under load, with Sentinel (what `make run` starts with FHIR_PATCH_LOCAL_REDIS=sentinel): the
master is SIGKILLed mid-load, the Sentinels promote the replica, and the service follows it by itself.
Afterwards: 0 lost, 0 duplicated, 0 order violations, nothing unfinished, and intake never more than 30 s
without acknowledging a patch. The old master then comes back and rejoins as a replica, as an operator would
bring it back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from devkit.sentinel import fail_over, replicas_of_master
from tests.support.ordered_load import OrderedLoad
from tests.support.processes import provision_module, wait_for
from tests.support.service import running_service

RECOVERY_SECONDS = 30  # the bound: the service acknowledges again within this long of the kill


@pytest.fixture()
def sentinel_set(tmp_path: Path) -> Iterator[tuple[dict[str, str], object, ModuleType]]:
    """A master, a replica and three Sentinels of this test's own (provision.start_sentinel_set)."""
    provision = provision_module()
    procs = provision.Processes()
    try:
        yield provision.start_sentinel_set(procs, tmp_path / "redis"), procs, provision
    finally:
        procs.stop_all()


@pytest.mark.services
def test_a_sentinel_failover_under_load_loses_duplicates_and_reorders_nothing(
    isolated_env: dict[str, str], sentinel_set: tuple[dict[str, str], object, ModuleType], tmp_path: Path
) -> None:
    redis_env, procs, provision = sentinel_set
    wait_for(lambda: replicas_of_master(redis_env) == 1, 30, "the replica to follow the master")
    env = {**isolated_env, **redis_env, "FHIR_PATCH_REDIS_WAIT_MS": "200"}
    with running_service(env, tmp_path, workers=2) as service:
        load = OrderedLoad(service, resources=16, per_resource=24, clients=8)
        load.create()
        facts: dict[str, object] = {}
        load.run(lambda: facts.update(fail_over(redis_env, provision, procs, tmp_path / "redis", RECOVERY_SECONDS)))
        report = load.report(load.applied_values())
        report |= facts
        report["longest_time_without_a_202_s"] = round(load.longest_silence(), 1)
    print(json.dumps(report))
    assert facts["promoted_port"] != facts["killed_port"], "the Sentinels promoted the replica"
    assert report["not_acknowledged"] == 0, report
    assert report["fifo_violations"] == 0 and report["duplicates"] == 0, report
    assert report["unfinished"] == 0, report
    assert report["longest_time_without_a_202_s"] < RECOVERY_SECONDS, report
