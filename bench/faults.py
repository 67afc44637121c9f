"""Fault runs under load, as a new user would try them: the API, Redis or the Celery main process SIGKILLed.

    .venv/bin/python bench/faults.py [--kill api,redis,celery] [--jobs 3000] [--resources 200] [--clients 16]
                                     [--redis one|sentinel]

It runs what `make run` runs (the supervisor of `fhir-patch serve`, which restarts a process that dies) on a
MongoDB-protocol server and a Redis of its own; Redis is killed and started again empty on the same port. With
`--redis sentinel`, Redis is what `make run` starts with FHIR_PATCH_LOCAL_REDIS=sentinel, and killing it kills
the master: the Sentinels promote the replica, and the old master comes back as a replica.
Each client owns some resources and sends its patches to each in order: async JSON Patch appends of one
identifier, each with an Idempotency-Key, retried with that key on transport errors and 5xx until answered 202.
At a third of the load each kill named is made in turn. Then every resource's identifiers are read back:
- lost: acknowledged, and not applied; duplicated: applied twice;
- order violations: pairs of one resource's acknowledged patches applied in the other order;
- unfinished: acknowledged jobs not final when the service went quiet;
- refused: retries answered 4xx (a same-key retry refused for good).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devkit.procfs import free_port, provision_module  # noqa: E402
from devkit.sentinel import fail_over, replicas_of_master  # noqa: E402

ASYNC = {"prefer": "respond-async", "content-type": "application/json-patch+json"}
QUIET_SECONDS = 60.0  # after the load: the resources are read once nothing changed for this long (or all done)


def _append(value: str) -> bytes:
    return json.dumps([{"op": "add", "path": "/identifier/-", "value": {"value": value}}]).encode()


class Redis:
    """A Redis of the run's own, which can be SIGKILLed and started again, empty, on the same port."""

    def __init__(self, folder: Path) -> None:
        self.port, self._folder = free_port(), folder
        self._binary = provision_module().helper("ensure-redis.sh")
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        argv = [self._binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self._folder)]
        proc = subprocess.Popen([*argv, "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                import redis

                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return proc
            time.sleep(0.05)
        raise RuntimeError("own Redis did not start")

    def kill_and_restart_empty(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc = self._start()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class SentinelRedis:
    """What `make run` starts with FHIR_PATCH_LOCAL_REDIS=sentinel: a master, a replica and three Sentinels; a
    kill is of the master, which the Sentinels replace by the replica (devkit/sentinel.py)."""

    def __init__(self, state: Path, provision: Any, procs: Any) -> None:
        self._state, self._provision, self._procs = state / "redis", provision, procs
        self.env = provision.start_sentinel_set(procs, self._state)
        wait_condition(lambda: replicas_of_master(self.env) == 1, 30)

    def kill_and_restart_empty(self) -> str:
        facts = fail_over(self.env, self._provision, self._procs, self._state)
        return (
            f"redis master on port {facts['killed_port']} (replica on {facts['promoted_port']} promoted after "
            f"{facts['promoted_after_s']} s; the old master back as a replica)"
        )

    def stop(self) -> None:
        pass  # the provisioned processes stop with the others


@contextlib.contextmanager
def service(state: Path, sentinel: bool = False) -> Iterator[tuple[str, subprocess.Popen[bytes], Any]]:
    provision = provision_module()
    procs = provision.Processes()
    own: Any = SentinelRedis(state, provision, procs) if sentinel else Redis(state)
    try:
        mongodb = provision.start_mongodb_protocol(procs, state)
        port = free_port()
        env = {
            **os.environ,
            **(own.env if sentinel else {"FHIR_PATCH_REDIS_URL": f"redis://127.0.0.1:{own.port}/0"}),
            "FHIR_PATCH_MONGODB_URI": mongodb,
            "FHIR_PATCH_HTTP_PORT": str(port),
            "FHIR_PATCH_AUTH_DISABLED": "true",
        }
        argv = [str(ROOT / ".venv" / "bin" / "fhir-patch"), "serve", "--log-dir", str(state / "logs")]
        supervisor = subprocess.Popen(argv, env=env, stdout=open(state / "serve.log", "ab"), start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        wait_condition(lambda: httpx.get(f"{base}/readyz", timeout=2, trust_env=False).status_code == 200, 120)
        try:
            yield base, supervisor, own
        finally:
            supervisor.terminate()
            supervisor.wait(timeout=60)
    finally:
        procs.stop_all()
        own.stop()


def wait_condition(condition: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if condition():  # type: ignore[operator]
                return
        time.sleep(0.2)
    raise TimeoutError(f"not ready within {seconds}s")


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of a process's direct children."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(OSError):
            found.append((int(child), Path(f"/proc/{child}/cmdline").read_text().replace("\0", " ")))
    return found


def kill(target: str, supervisor: subprocess.Popen[bytes], redis: Any) -> str:
    """SIGKILL one process of the running service; what was killed."""
    if target == "redis" and isinstance(redis, SentinelRedis):
        return redis.kill_and_restart_empty()
    if target == "redis":
        redis.kill_and_restart_empty()
        return f"redis (restarted empty on port {redis.port})"
    needle = "uvicorn" if target == "api" else "celery"
    pid = next(pid for pid, line in _children(supervisor.pid) if needle in line)
    os.kill(pid, signal.SIGKILL)
    return f"{target} main process {pid}"


class Load:
    def __init__(self, base: str, resources: int, jobs: int, clients: int) -> None:
        self.base, self.resources, self.clients = base, resources, clients
        self.per_resource = jobs // resources
        self.acknowledged: dict[int, list[int]] = {r: [] for r in range(resources)}
        self.locations: list[str] = []
        self.refused: list[str] = []
        self.retries = 0
        self.sent = 0
        self.lock = threading.Lock()
        self.killed_at = self.all_applied_at = 0.0  # monotonic: the last kill; every acknowledged job applied

    def seed(self) -> None:
        with httpx.Client(base_url=f"{self.base}/fhir", trust_env=False, timeout=30) as client:
            for r in range(self.resources):
                body = {"resourceType": "Patient", "id": f"r{r}", "identifier": [{"value": "start"}]}
                assert client.put(f"Patient/r{r}", json=body).status_code in (200, 201)

    def run_client(self, c: int, deadline: float) -> None:
        mine = [r for r in range(self.resources) if r % self.clients == c]
        with httpx.Client(base_url=f"{self.base}/fhir", trust_env=False, timeout=10) as client:
            for n in range(self.per_resource):
                for r in mine:
                    location = self._send(client, r, n, deadline)
                    if location is not None:
                        with self.lock:
                            self.acknowledged[r].append(n)
                            self.locations.append(location)

    def _send(self, client: httpx.Client, r: int, n: int, deadline: float) -> str | None:
        headers = {**ASYNC, "idempotency-key": f"r{r}-{n}"}
        while time.monotonic() < deadline:
            with self.lock:
                self.sent += 1
            try:
                answer = client.patch(f"Patient/r{r}", content=_append(str(n)), headers=headers)
            except httpx.HTTPError:
                answer = None
            if answer is not None and answer.status_code == 202:
                return answer.headers["content-location"]
            if answer is not None and answer.status_code < 500 and answer.status_code != 429:
                self.refused.append(f"r{r}-{n}: {answer.status_code} {answer.text[:200]}")
                return None
            with self.lock:
                self.retries += 1
            time.sleep(0.1)
        return None

    def done(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.acknowledged.values())


def check(load: Load) -> dict[str, int]:
    """Read every resource back, once nothing changed for QUIET_SECONDS (or all acknowledged jobs are there)."""
    expected = load.done()
    with httpx.Client(base_url=f"{load.base}/fhir", trust_env=False, timeout=30) as client:
        seen: dict[int, list[str]] = {}
        last, moved = -1, time.monotonic()
        while time.monotonic() - moved < QUIET_SECONDS:
            seen = {r: _values(client, r) for r in range(load.resources)}
            applied = sum(len(v) for v in seen.values())
            if applied >= expected:
                load.all_applied_at = time.monotonic()
                break
            if applied != last:
                last, moved = applied, time.monotonic()
            time.sleep(1)
        lost = duplicated = violations = 0
        for r, acked in load.acknowledged.items():
            values = [int(v) for v in seen.get(r, [])]
            lost += len(set(acked) - set(values))
            duplicated += len(values) - len(set(values))
            position = {v: i for i, v in enumerate(values)}
            order = [n for n in acked if n in position]
            violations += sum(1 for a, b in zip(order, order[1:]) if position[a] > position[b])
        unfinished = sum(1 for location in load.locations if client.get(location).status_code == 202)
    return {"lost": lost, "duplicated": duplicated, "order_violations": violations, "unfinished": unfinished}


def _values(client: httpx.Client, r: int) -> list[str]:
    identifiers = client.get(f"Patient/r{r}").json().get("identifier", [])
    return [i["value"] for i in identifiers if i.get("value") != "start"]


def run(targets: list[str], jobs: int, resources: int, clients: int, sentinel: bool = False) -> dict[str, object]:
    with (
        tempfile.TemporaryDirectory(prefix="fhir-patch-faults-") as folder,
        service(Path(folder), sentinel) as running,
    ):
        base, supervisor, redis = running
        load = Load(base, resources, jobs, clients)
        load.seed()
        started = time.monotonic()
        deadline = started + 600
        with ThreadPoolExecutor(clients) as pool:
            futures = [pool.submit(load.run_client, c, deadline) for c in range(clients)]
            killed = _kill_in_turn(load, targets, futures, lambda target: kill(target, supervisor, redis))
            for future in futures:
                future.result()
        load_seconds = time.monotonic() - started
        report: dict[str, object] = {
            "redis": "sentinel" if sentinel else "one process",
            "jobs": jobs,
            "resources": resources,
            "clients": clients,
            "acknowledged": load.done(),
            "not_acknowledged": jobs - load.done(),
            "killed": killed,
            "requests_sent": load.sent,
            "retries": load.retries,
            "refused": len(load.refused),
            "refusals": load.refused[:5],
            "load_seconds": round(load_seconds, 1),
        }
        report.update(check(load))
        report["settled_seconds"] = round(time.monotonic() - started, 1)
        if load.all_applied_at:  # seen by polling every second, after the load ended
            report["all_applied_after_last_kill_s"] = round(load.all_applied_at - load.killed_at, 1)
        return report


def _kill_in_turn(load: Load, targets: list[str], futures: list[Any], kill_one: Any) -> list[dict[str, object]]:
    """Each kill when its share of the load is acknowledged (the first at a third)."""
    killed: list[dict[str, object]] = []
    jobs = load.per_resource * load.resources
    for n, target in enumerate(targets, 1):
        threshold = jobs * n // (len(targets) + 2)
        while load.done() < threshold and not all(f.done() for f in futures):
            time.sleep(0.05)
        load.killed_at = time.monotonic()
        killed.append({"what": kill_one(target), "after_acknowledged": load.done()})
    return killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kill", default="api", help="comma-separated, in order: api, redis, celery")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--resources", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--redis", choices=("one", "sentinel"), default="one", help="sentinel: a master, a replica, 3 Sentinels"
    )
    args = parser.parse_args()
    targets = [t for t in args.kill.split(",") if t]
    assert all(t in ("api", "redis", "celery") for t in targets), targets
    print(json.dumps(run(targets, args.jobs, args.resources, args.clients, args.redis == "sentinel")), flush=True)


if __name__ == "__main__":
    main()
