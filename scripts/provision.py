#!/usr/bin/env python3
"""Provision Redis and a MongoDB-protocol server, run a command against them, tear down.

    python scripts/provision.py [--state DIR] -- COMMAND [ARG...]

- Redis: FHIR_PATCH_REDIS_URL when set; else Debian's redis-server (installed when
  missing) on a free 127.0.0.1 port, data in the state folder, no persistence. With
  FHIR_PATCH_LOCAL_REDIS=sentinel: a master, a replica and three Sentinels, and the
  FHIR_PATCH_REDIS_SENTINELS / _SENTINEL_MASTER settings that follow them.
- MongoDB protocol: FHIR_PATCH_MONGODB_URI (or MONGODB_URI) when set; else `mongod`
  when on PATH; else FerretDB v1.24.2 with its SQLite backend, built once into
  .cache/ferretdb, telemetry disabled, every listener on loopback.

COMMAND runs with FHIR_PATCH_REDIS_URL and FHIR_PATCH_MONGODB_URI set; its exit code
is ours. Every process we start is stopped by its pid on exit, on failure and on
Ctrl-C or SIGTERM; they also get SIGTERM from the kernel if this process dies
(PR_SET_PDEATHSIG), so nothing is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"


def log(message: str) -> None:
    print(f"provision: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # Runs in the child before exec: ask the kernel to SIGTERM it when we die.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class Processes:
    """The processes we started, stopped in reverse order by pid."""

    def __init__(self) -> None:
        self._started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], logfile: Path) -> subprocess.Popen[bytes]:
        out = open(logfile, "ab")
        # Own session: a Ctrl-C in the terminal reaches the command, not the
        # services, so they are stopped in order, after the command.
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        out.close()
        self._started.append((name, proc))
        return proc

    def stop_all(self) -> None:
        for name, proc in reversed(self._started):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    log(f"{name} (pid {proc.pid}) did not stop on SIGTERM; killing it")
                    proc.kill()
                    proc.wait()
        self._started.clear()


def wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, logfile: Path, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}; see {logfile}")
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s; see {logfile}")


def tcp_open(port: int) -> Callable[[], bool]:
    def check() -> bool:
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
        return False

    return check


def helper(script: str) -> str:
    env = {**os.environ, "PYTHON": sys.executable}  # the build's index check needs pymongo, which this interpreter has
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / script)], check=True, stdout=subprocess.PIPE, text=True, env=env
    )
    return done.stdout.strip().splitlines()[-1]


def scratch_dir() -> str | None:
    """Throwaway service data (the test command's) goes to RAM when the machine has /dev/shm:
    the data dies with the run anyway, and FerretDB's SQLite files then cost no disk I/O wait."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def start_redis(procs: Processes, state: Path, persistent: bool = False) -> str:
    return f"redis://{LOOPBACK}:{start_redis_node(procs, state, 'redis-server', persistent)}/0"


SENTINEL_MASTER = "fhirpatch"
SENTINEL_DOWN_AFTER_MS = 2000  # a master that does not answer for 2 s is failed over (a person can watch it happen)


def _redis_argv(binary: str, port: int, folder: Path, persistent: bool) -> list[str]:
    # `make run` keeps Redis's data in an append-only file synced every second, so a restart keeps the queues;
    # correctness does not rest on it (the sync marker and the reconciler rebuild them from MongoDB), the tests
    # run without it to show that.
    aof = ["--appendonly", "yes", "--appendfsync", "everysec"] if persistent else ["--appendonly", "no"]
    base = ["--bind", LOOPBACK, "--port", str(port), "--dir", str(folder), "--save", ""]
    return [binary, *base, *aof, "--protected-mode", "yes", "--daemonize", "no"]


def start_redis_node(
    procs: Processes, state: Path, name: str, persistent: bool = False, extra: tuple[str, ...] = ()
) -> int:
    """One redis-server on a free loopback port, data under state/name; its port."""
    binary = helper("ensure-redis.sh")
    port = free_port()
    folder = state / name
    folder.mkdir(parents=True, exist_ok=True)
    logfile = state / f"{name}.log"
    proc = procs.start(name, [*_redis_argv(binary, port, folder, persistent), *extra], logfile)
    wait_until(tcp_open(port), proc, name, logfile)
    return port


def start_sentinel_set(procs: Processes, state: Path, persistent: bool = False) -> dict[str, str]:
    """FHIR_PATCH_LOCAL_REDIS=sentinel: a master, a replica and three Sentinels (quorum 2) on loopback, so a
    failover can be tried on one machine; the settings that make the service follow the master."""
    master = start_redis_node(procs, state, "redis-master", persistent)
    start_redis_node(procs, state, "redis-replica", persistent, ("--replicaof", LOOPBACK, str(master)))
    binary = helper("ensure-redis.sh")
    sentinels = []
    for n in range(3):
        port, folder = free_port(), state / f"sentinel{n}"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "sentinel.conf"  # a Sentinel rewrites its own configuration as it learns
        config.write_text(
            f"port {port}\nbind {LOOPBACK}\ndir {folder}\n"
            f"sentinel monitor {SENTINEL_MASTER} {LOOPBACK} {master} 2\n"
            f"sentinel down-after-milliseconds {SENTINEL_MASTER} {SENTINEL_DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SENTINEL_MASTER} 10000\nsentinel parallel-syncs {SENTINEL_MASTER} 1\n"
        )
        logfile = state / f"sentinel{n}.log"
        proc = procs.start(f"sentinel{n}", [binary, str(config), "--sentinel"], logfile)
        wait_until(tcp_open(port), proc, f"sentinel{n}", logfile)
        sentinels.append(f"{LOOPBACK}:{port}")
    return {
        "FHIR_PATCH_REDIS_URL": f"redis://{LOOPBACK}:{master}/0",
        "FHIR_PATCH_REDIS_SENTINELS": ",".join(sentinels),
        "FHIR_PATCH_REDIS_SENTINEL_MASTER": SENTINEL_MASTER,
    }


def start_mongodb_protocol(procs: Processes, state: Path) -> str:
    port = free_port()
    folder = state / "mongodb"
    folder.mkdir(parents=True, exist_ok=True)
    logfile = state / "mongodb.log"
    mongod = shutil.which("mongod")
    if mongod:
        argv = [mongod, "--bind_ip", LOOPBACK, "--port", str(port), "--dbpath", str(folder)]
        what = "mongod"
    else:
        ferretdb = helper("build-ferretdb.sh")
        # WAL with synchronous=NORMAL: a commit survives a crash of any process (what the tests and
        # `make run` exercise) without an fsync per write; only a power cut may lose the last commits.
        argv = [
            ferretdb,
            "--handler=sqlite",
            f"--sqlite-url=file:{folder}/?_pragma=synchronous(normal)",
            f"--listen-addr={LOOPBACK}:{port}",
            f"--debug-addr={LOOPBACK}:{free_port()}",
            f"--state-dir={folder}",
            "--telemetry=disable",
            "--log-level=warn",
        ]
        what = "ferretdb"
    proc = procs.start(what, argv, logfile)
    wait_until(tcp_open(port), proc, what, logfile)
    return f"mongodb://{LOOPBACK}:{port}/"


@contextlib.contextmanager
def services(state: Path, persistent: bool = False) -> Iterator[dict[str, str]]:
    procs = Processes()
    try:
        env = {}
        if os.environ.get("FHIR_PATCH_REDIS_URL"):
            env["FHIR_PATCH_REDIS_URL"] = os.environ["FHIR_PATCH_REDIS_URL"]
        elif os.environ.get("FHIR_PATCH_LOCAL_REDIS") == "sentinel":
            env.update(start_sentinel_set(procs, state, persistent))
        else:
            env["FHIR_PATCH_REDIS_URL"] = start_redis(procs, state, persistent)
        env["FHIR_PATCH_MONGODB_URI"] = (
            os.environ.get("FHIR_PATCH_MONGODB_URI")
            or os.environ.get("MONGODB_URI")
            or start_mongodb_protocol(procs, state)
        )
        yield env
    finally:
        procs.stop_all()


def run_command(command: list[str], env: dict[str, str]) -> int:
    child = subprocess.Popen(command, env={**os.environ, **env})

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            child.kill()
            child.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--state", type=Path, help="folder for service data and logs (default: a temporary folder, removed after)"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="command to run, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after --")
    with contextlib.ExitStack() as stack:
        state = args.state or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="fhir-patch-", dir=scratch_dir()))
        )
        state.mkdir(parents=True, exist_ok=True)
        try:
            env = stack.enter_context(services(state, persistent=args.state is not None))
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            log(f"could not start services: {exc}")
            return 2
        log(f"redis {env['FHIR_PATCH_REDIS_URL']}  mongodb {env['FHIR_PATCH_MONGODB_URI']}  logs in {state}")
        if "FHIR_PATCH_REDIS_SENTINELS" in env:
            log(f"redis sentinels {env['FHIR_PATCH_REDIS_SENTINELS']} (master {SENTINEL_MASTER!r})")
        return run_command(command, env)


if __name__ == "__main__":
    sys.exit(main())
