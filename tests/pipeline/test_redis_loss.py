"""Per-resource order survives the loss of Redis: a load runs while the service's Redis is SIGKILLed and restarted
empty. Every patch is retried under its own Idempotency-Key until acknowledged (202); afterwards each resource
must hold exactly its acknowledged patches, in acknowledgement order (0 FIFO violations), and every acknowledged
job must have finished (0 unfinished)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ordered_load import OrderedLoad
from tests.support.processes import free_port, provision_module, wait_for
from tests.support.service import Service, running_service


def _redis_argv(port: int, folder: Path) -> list[str]:
    binary = (
        subprocess.run(
            ["bash", str(Path(provision_module().__file__).parent / "ensure-redis.sh")],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    return [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(folder),
        "--save",
        "",
        "--appendonly",
        "no",
    ]


@contextlib.contextmanager
def own_redis(tmp: Path) -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    port = free_port()
    procs = [subprocess.Popen(_redis_argv(port, tmp), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)]
    try:
        yield port, procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.mark.services
def test_order_and_completion_survive_redis_killed_and_restarted_empty(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    with own_redis(tmp_path) as (port, procs):
        env = {**isolated_env, "FHIR_PATCH_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        wait_for(lambda: _ping(port), 30, "own Redis up")
        with running_service(env, tmp_path, workers=2) as service:
            load = OrderedLoad(service)
            load.create()
            seen: dict[str, float] = {}
            load.run(lambda: seen.update(_kill_redis_under_backlog(service, port, procs, tmp_path, load)))
            report = load.report(load.applied_values())
            rebuilt = sum("Redis was out of sync" in p.read_text() for p in service.log_dir.glob("worker*.log"))
            report |= {"queues_rebuilt": rebuilt, "acknowledged_before_kill": seen["backlog"]}
            report["seconds_after_restart"] = round(time.monotonic() - seen["recovered_at"], 1)
    print(json.dumps(report))
    assert report["not_acknowledged"] == 0
    assert report["acknowledged_before_kill"] > 0 and report["queues_rebuilt"] >= 1, (
        "the loss landed mid-load and was noticed"
    )
    assert report["fifo_violations"] == 0, report
    assert report["unfinished"] == 0, report


def _ping(port: int) -> bool:
    import redis

    return bool(redis.Redis(port=port, socket_timeout=0.5).ping())


def _kill_redis_under_backlog(
    service: Service, port: int, procs: list[subprocess.Popen[bytes]], tmp: Path, load: OrderedLoad
) -> dict[str, float]:
    """Freeze the workers, kill Redis with everything in it, start an empty one, let new patches in, thaw: the
    jobs acknowledged before the kill and when Redis came back."""
    for n in range(len(service.workers)):  # nothing applies for a while: acknowledged jobs wait in the queues
        service.signal_worker(n, signal.SIGSTOP)
    time.sleep(1.0)
    backlog = sum(load.acknowledged.values())
    procs[0].send_signal(signal.SIGKILL)  # Redis dies with everything: queues, payloads, broker messages, marker
    procs[0].wait()
    time.sleep(0.5)
    procs.append(subprocess.Popen(_redis_argv(port, tmp), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
    recovered_at = time.monotonic()
    time.sleep(1.0)  # new patches are acknowledged on the empty Redis before any worker runs again
    for n in range(len(service.workers)):
        service.signal_worker(n, signal.SIGCONT)
    return {"backlog": backlog, "recovered_at": recovered_at}
