"""A Redis failover on a Sentinel set started by scripts/provision.py (FHIR_PATCH_LOCAL_REDIS=sentinel): find the
master, SIGKILL it, wait for the Sentinels to promote the replica, and bring the old master back on its port
(the Sentinels make it a replica of the new one). Shared by tests/pipeline/test_sentinel.py and bench/faults.py."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import redis

MASTER = "fhirpatch"  # scripts/provision.py SENTINEL_MASTER


def master_of(env: dict[str, str]) -> tuple[str, int]:
    """The master the first Sentinel names now."""
    host, port = env["FHIR_PATCH_REDIS_SENTINELS"].split(",")[0].rsplit(":", 1)
    sentinel = redis.Redis(host=host, port=int(port), socket_timeout=2, decode_responses=True)
    try:
        named_host, named_port = sentinel.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
    finally:
        sentinel.close()
    return str(named_host), int(named_port)


def replicas_of_master(env: dict[str, str]) -> int:
    host, port = master_of(env)
    client = redis.Redis(host=host, port=port, socket_timeout=2)
    try:
        return int(client.info("replication")["connected_slaves"])
    finally:
        client.close()


def fail_over(
    env: dict[str, str], provision: ModuleType, procs: Any, state: Path, within: float = 60
) -> dict[str, Any]:
    """SIGKILL the master, wait until another is named (at most `within` s), restart the old one on its port."""
    host, port = master_of(env)
    client = redis.Redis(host=host, port=port, socket_timeout=2)
    pid = int(client.info("server")["process_id"])
    client.close()
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    while master_of(env)[1] == port:
        if time.monotonic() - killed_at > within:
            raise TimeoutError(f"no replica promoted within {within}s of killing the master on port {port}")
        time.sleep(0.1)
    promoted_after = time.monotonic() - killed_at
    folder = state / "redis-master"
    argv = provision._redis_argv(provision.helper("ensure-redis.sh"), port, folder, False)
    procs.start("redis-master-again", argv, state / "redis-master-again.log")
    return {"killed_port": port, "promoted_port": master_of(env)[1], "promoted_after_s": round(promoted_after, 1)}
