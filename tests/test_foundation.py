"""The foundation: settings, readiness over real services, `make run`'s process tree, compose."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from pymongo import MongoClient

from tests.support.processes import api_argv, free_port, started, stop, wait_for, wait_http_ok, worker_argv
from tests.support.tokens import TokenIssuer
from worker.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parent.parent


def test_settings_are_read_once_and_frozen() -> None:
    settings = Settings.from_env(
        {
            "FHIR_PATCH_HTTP_PORT": "9001",
            "MONGODB_URI": "mongodb://127.0.0.1:1/",
            "FHIR_PATCH_ELEMENT_POLICIES": '{"DocumentReference": ["securityLabel"]}',
        }
    )
    assert settings.http_port == 9001
    assert settings.mongodb_uri == "mongodb://127.0.0.1:1/"
    assert settings.element_policies == {"DocumentReference": ("securityLabel",)}
    with pytest.raises(AttributeError):
        settings.http_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FHIR_PATCH_HTTP_PORT", "eighty"),
        ("FHIR_PATCH_SYNC_WAIT_SECONDS", "-1"),
        ("FHIR_PATCH_ELEMENT_POLICIES", "[1]"),
        ("FHIR_PATCH_MAX_BODY_BYTES", "1.5"),
    ],
)
def test_bad_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_mongodb_document_round_trip(isolated_settings: Settings) -> None:
    client: MongoClient[dict[str, object]] = MongoClient(isolated_settings.mongodb_uri, serverSelectionTimeoutMS=5000)
    try:
        collection = client[isolated_settings.database]["roundtrip"]
        marker = uuid.uuid4().hex
        collection.insert_one({"_id": marker, "value": "1.50", "nested": {"list": [1, 2]}})
        assert collection.find_one({"_id": marker}) == {"_id": marker, "value": "1.50", "nested": {"list": [1, 2]}}
    finally:
        client.drop_database(isolated_settings.database)
        client.close()


@pytest.mark.services
def test_readyz_reports_a_real_worker_over_redis(isolated_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    isolated_env = {**isolated_env, **TokenIssuer(tmp_path / "jwks.json").env()}
    with started(api_argv(port), isolated_env, tmp_path / "api.log"):
        wait_http_ok(f"http://127.0.0.1:{port}/healthz")
        before = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert before.status_code == 503
        assert before.json()["checks"]["worker"]["status"] == "error"
        with started(worker_argv("ready"), isolated_env, tmp_path / "worker.log"):
            wait_http_ok(f"http://127.0.0.1:{port}/readyz", timeout=60)
            body = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json()
            assert body["status"] == "ok"
            assert body["checks"]["redis"]["status"] == "ok"
            assert body["checks"]["mongodb"] == {"status": "ok", "ok": 1.0, "ms": body["checks"]["mongodb"]["ms"]}
            assert any(name.startswith("ready@") for name in body["checks"]["worker"]["workers"])


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _socket_inodes(pids: set[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    return inodes


def _tcp_endpoints(inodes: set[str]) -> list[tuple[str, str]]:
    """(local, remote) IPv4/IPv6 addresses in hex of the TCP sockets with these inodes."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[9] in inodes:
                rows.append((cols[1].split(":")[0], cols[2].split(":")[0]))
    return rows


def _is_loopback(hex_address: str) -> bool:
    if len(hex_address) == 8:  # IPv4, little-endian: 127.x.x.x ends with 7F; 0.0.0.0 is an unconnected socket
        return hex_address.endswith("7F") or hex_address == "00000000"
    return (
        hex_address in {"00000000000000000000000001000000", "00000000000000000000000000000000"}
        or hex_address.startswith("0000000000000000FFFF0000")
        and hex_address.endswith("7F")
    )


@pytest.mark.services
def test_make_run_serves_readyz_uses_loopback_only_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """The run command's own path: provision fresh services, serve, Ctrl-C, nothing left."""
    port = free_port()
    env, argv = _make_run(port, tmp_path)
    with open(tmp_path / "run.log", "wb") as out:
        run = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/readyz", timeout=120)
        tree = _descendants(run.pid)
        commands = [_command_line(pid) for pid in tree if Path(f"/proc/{pid}").exists()]
        assert any("redis-server" in c for c in commands)
        ferretdb = [c for c in commands if "ferretdb" in c]
        assert all("--telemetry=disable" in c and "--listen-addr=127.0.0.1:" in c for c in ferretdb)
        endpoints = _tcp_endpoints(_socket_inodes(tree | {run.pid}))
        assert endpoints, "expected the service's processes to hold TCP sockets"
        assert all(_is_loopback(local) and _is_loopback(remote) for local, remote in endpoints), endpoints
        _development_token_works(port, tmp_path / "auth")
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=60) == 0
        wait_for(lambda: not any(_running(pid) for pid in tree), 20, "every process of make run stopped")
    finally:
        stop(run)


def _make_run(port: int, tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    """The environment and command of `make run`, on fresh services of its own."""
    own = {"FHIR_PATCH_REDIS_URL", "FHIR_PATCH_MONGODB_URI", "MONGODB_URI"}
    env = {k: v for k, v in os.environ.items() if k not in own}
    env.update(
        FHIR_PATCH_HTTP_PORT=str(port),
        FHIR_PATCH_DATABASE=f"run_{uuid.uuid4().hex[:8]}",
        FHIR_PATCH_NAMESPACE=f"run-{uuid.uuid4().hex[:8]}",
    )
    provision = [sys.executable, str(ROOT / "scripts" / "provision.py"), "--state", str(tmp_path / "services"), "--"]
    serve = [str(Path(sys.executable).parent / "fhir-patch"), "serve", "--log-dir", str(tmp_path / "logs")]
    return env, [*provision, *serve, "--auth-dir", str(tmp_path / "auth")]


def _command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def _development_token_works(port: int, auth_dir: Path) -> None:
    """Secure by default: no token is 401; the quickstart's `fhir-patch token` gets in."""
    base = f"http://127.0.0.1:{port}/fhir"
    assert httpx.get(f"{base}/Patient/nobody", timeout=10).status_code == 401
    assert (auth_dir / "dev-signing-key.pem").stat().st_mode & 0o077 == 0, (
        "the private key is readable by its owner only"
    )
    token = subprocess.run(
        [
            str(Path(sys.executable).parent / "fhir-patch"),
            "token",
            "--scope",
            "system/*.cruds",
            "--auth-dir",
            str(auth_dir),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    answer = httpx.get(f"{base}/Patient/nobody", headers={"authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 404, answer.text


def test_compose_file_names_services_and_passes_the_settings_environment() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"mongo1", "mongo2", "mongo3", "mongo-init", "redis", "api", "worker"} <= set(services)
    for name in ("mongo1", "mongo2", "mongo3", "redis", "api", "worker"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    known = Settings.environment_names()
    for name in ("api", "worker"):
        environment = services[name]["environment"]
        assert set(environment) <= known, set(environment) - known
        assert {"FHIR_PATCH_REDIS_URL", "FHIR_PATCH_MONGODB_URI", "FHIR_PATCH_DATABASE"} <= set(environment)
        assert "build" in services[name]
        assert services[name]["depends_on"]["mongo-init"] == {"condition": "service_completed_successfully"}


def test_compose_runs_mongodb_as_a_three_member_replica_set_written_by_majority() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    members = [f"mongo{n}" for n in (1, 2, 3)]
    for name in members:
        member = services[name]
        assert member["image"].startswith("mongo:") and member["image"].split(":")[1][0].isdigit()
        assert member["command"][:3] == ["mongod", "--replSet", "rs0"], member["command"]
        assert [v.split(":")[0] for v in member["volumes"]] == [f"{name}-data"] and f"{name}-data" in compose["volumes"]
    init = services["mongo-init"]
    assert init["restart"] == "no" and set(init["depends_on"]) == set(members)
    assert all(init["depends_on"][m] == {"condition": "service_healthy"} for m in members)
    script = init["command"][-1]
    assert 'rs.initiate({_id: "rs0"' in script and all(f'host: "{m}:27017"' in script for m in members)
    environment = services["api"]["environment"]
    uri = environment["FHIR_PATCH_MONGODB_URI"]
    assert uri.endswith("?replicaSet=rs0") and all(f"{m}:27017" in uri for m in members), uri
    concern = Settings.from_env(
        {"FHIR_PATCH_MONGODB_WRITE_CONCERN": environment["FHIR_PATCH_MONGODB_WRITE_CONCERN"].split(":-")[1].rstrip("}")}
    )
    assert (concern.mongodb_write_concern.w, concern.mongodb_write_concern.j) == ("majority", True)


def test_readme_documents_every_setting_and_both_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    for name in Settings.environment_names():
        assert f"| `{name}` |" in readme, f"{name} missing from the README configuration table"
