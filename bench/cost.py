"""What one applied PATCH costs: CPU-milliseconds summed over every process of the service, and throughput.

Closed-loop synchronous PATCHes at 1, 8 and 32 clients, JSON Patch and FHIRPath Patch separately, on 200
Organizations of about 2.5 KB with 5 operations each (the comparison with HAPI FHIR in issue #13); then async
submission, an NDJSON feed of PATCHes, and a 500-entry transaction. CPU is read from /proc for the API, the
workers (and their pool children), Redis and the MongoDB-protocol server; the load generator's own CPU is reported
apart. Prints JSON.

    .venv/bin/python bench/cost.py [--seconds 10] [--clients 1,8,32] [--workers 1] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import AUTH, counts, running, wait_ended  # noqa: E402

from devkit.procfs import command_name, cpu_seconds, descendants  # noqa: E402

ORGS = 200  # the resources the closed loops patch
TRANSACTION_ENTRIES = 500
JSON_PATCH = "application/json-patch+json"
FHIR_JSON = "application/fhir+json"


def organization(n: int) -> dict[str, Any]:
    """About 2.5 KB: identifiers, names, telecom, addresses and contacts, as a directory entry has."""
    address = {
        "use": "work",
        "line": [f"{n} rue de la Santé", "Bâtiment B"],
        "city": "Paris",
        "postalCode": "75014",
        "country": "FR",
    }
    return {
        "resourceType": "Organization",
        "id": f"c{n}",
        "active": True,
        "name": f"Centre hospitalier {n}",
        "identifier": [
            {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": f"1{n:08d}"},
            {"system": "https://annuaire.sante.fr", "value": f"ror-{n}"},
        ],
        "alias": [f"CH {n}", f"Hôpital {n}", f"Site {n}"],
        "telecom": [
            {"system": "phone", "value": f"01 45 65 {n % 100:02d} {n % 97:02d}", "use": "work"},
            {"system": "email", "value": f"contact{n}@ch{n}.example.org"},
        ],
        "address": [address, {**address, "use": "billing", "line": [f"BP {n}"]}],
        "contact": [_contact(n) for _ in range(4)],
        "type": [
            {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov"}],
                "text": "Healthcare Provider",
            }
        ],
    }


def _contact(n: int) -> dict[str, Any]:
    return {
        "purpose": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/contactentity-type", "code": "ADMIN"}]
        },
        "name": {"family": f"Durand{n}", "given": ["Claire", "Marie"]},
        "telecom": [{"system": "phone", "value": "01 00 00 00 00"}],
    }


def json_patch(i: int) -> bytes:
    return json.dumps(
        [
            {"op": "replace", "path": "/name", "value": f"Centre {i}"},
            {"op": "replace", "path": "/alias/0", "value": f"CH v{i}"},
            {"op": "replace", "path": "/address/0/city", "value": f"Ville {i % 50}"},
            {"op": "add", "path": "/telecom/-", "value": {"system": "url", "value": f"https://x{i}.example"}},
            {"op": "remove", "path": "/telecom/2"},
        ]
    ).encode()


def _op(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    extra = [{"name": name, **value} for name, value in parts.items()]
    return {
        "name": "operation",
        "part": [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}, *extra],
    }


def fhirpath_patch(i: int) -> bytes:
    return json.dumps(
        {
            "resourceType": "Parameters",
            "parameter": [
                _op("replace", "Organization.name", value={"valueString": f"Centre {i}"}),
                _op("replace", "Organization.alias[0]", value={"valueString": f"CH v{i}"}),
                _op(
                    "replace", "Organization.address.where(use = 'work').city", value={"valueString": f"Ville {i % 50}"}
                ),
                _op(
                    "add",
                    "Organization",
                    name={"valueString": "telecom"},
                    value={"valueContactPoint": {"system": "url", "value": f"https://x{i}.example"}},
                ),
                _op("delete", "Organization.telecom[2]"),
            ],
        }
    ).encode()


FORMATS: dict[str, tuple[str, Callable[[int], bytes]]] = {
    "json-patch": (JSON_PATCH, json_patch),
    "fhirpath-patch": (FHIR_JSON, fhirpath_patch),
}


class CpuMeter:
    """CPU seconds of the service's processes (every descendant of this process) and of this process itself."""

    def __init__(self) -> None:
        self.by_name: Counter[str] = Counter()
        self._start = self._read()

    @staticmethod
    def _read() -> dict[int, tuple[str, float]]:
        return {pid: (command_name(pid), cpu_seconds(pid)) for pid in descendants(os.getpid())}

    @staticmethod
    def own() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def stop(self) -> float:
        """Service CPU seconds since the meter started; per process kind in `by_name`."""
        for pid, (name, seconds) in self._read().items():
            self.by_name[name] += seconds - self._start.get(pid, (name, 0.0))[1]
        return sum(self.by_name.values())


def create(base: str, resources: int = TRANSACTION_ENTRIES) -> None:
    lines = (
        "\n".join(
            json.dumps({"request": {"method": "PUT", "url": f"Organization/c{n}"}, "resource": organization(n)})
            for n in range(resources)
        )
        + "\n"
    )
    with httpx.Client(base_url=f"{base}/fhir", trust_env=False, timeout=120, headers=AUTH) as client:
        client.post("$bulk-submit", content=lines.encode(), headers={"content-type": "application/fhir+ndjson"})
    wait_ended(base, counts(base)["accepted"])


def closed_loop(
    base: str,
    clients: int,
    seconds: float,
    send: Callable[[httpx.Client, int], httpx.Response],
) -> tuple[list[float], Counter[int]]:
    """`clients` threads, each sending one request after the other for `seconds`: latencies and statuses."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client_loop(c: int) -> None:
        with httpx.Client(base_url=f"{base}/fhir", trust_env=False, timeout=60, headers=AUTH) as http:
            n = c
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                status = send(http, n).status_code
                with lock:
                    latencies.append(time.perf_counter() - started)
                    statuses[status] += 1
                n += clients

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, statuses


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1) if ordered else 0.0


def sync_patches(base: str, kind: str, clients: int, seconds: float) -> dict[str, Any]:
    content_type, body = FORMATS[kind]

    def send(http: httpx.Client, n: int) -> httpx.Response:
        return http.patch(f"Organization/c{n % ORGS}", content=body(n), headers={"content-type": content_type})

    meter, own = CpuMeter(), CpuMeter.own()
    started = time.perf_counter()
    latencies, statuses = closed_loop(base, clients, seconds, send)
    elapsed = time.perf_counter() - started
    service_cpu, applied = meter.stop(), statuses.get(200, 0)
    return {
        "format": kind,
        "clients": clients,
        "completed_per_s": round(applied / elapsed, 1),
        "p50_ms": _percentile(latencies, 0.5),
        "p99_ms": _percentile(latencies, 0.99),
        "statuses": dict(statuses),
        "cpu_ms_per_patch": round(service_cpu * 1000 / max(1, applied), 2),
        "cpu_ms_by_process": {k: round(v * 1000 / max(1, applied), 2) for k, v in sorted(meter.by_name.items())},
        "load_generator_cpu_ms_per_patch": round((CpuMeter.own() - own) * 1000 / max(1, applied), 2),
    }


def async_patches(base: str, jobs: int, clients: int) -> dict[str, Any]:
    accepted_before = counts(base).get("accepted", 0)
    meter, started = CpuMeter(), time.perf_counter()

    def send(http: httpx.Client, n: int) -> httpx.Response:
        return http.patch(
            f"Organization/c{n % ORGS}",
            content=json_patch(n),
            headers={"content-type": JSON_PATCH, "prefer": "respond-async"},
        )

    per_client = jobs // clients
    statuses = closed_loop_n(base, clients, per_client, send)
    submitted = time.perf_counter() - started
    wait_ended(base, accepted_before + per_client * clients)
    elapsed = time.perf_counter() - started
    applied = per_client * clients
    return {
        "jobs": applied,
        "clients": clients,
        "submitted_per_s": round(applied / submitted, 1),
        "applied_per_s": round(applied / elapsed, 1),
        "statuses": dict(statuses),
        "cpu_ms_per_patch": round(meter.stop() * 1000 / applied, 2),
    }


def closed_loop_n(
    base: str, clients: int, each: int, send: Callable[[httpx.Client, int], httpx.Response]
) -> Counter[int]:
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def client_loop(c: int) -> None:
        with httpx.Client(base_url=f"{base}/fhir", trust_env=False, timeout=60, headers=AUTH) as http:
            for k in range(each):
                status = send(http, c + k * clients).status_code
                with lock:
                    statuses[status] += 1

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def feed(base: str, lines: int, creates: bool = False) -> dict[str, Any]:
    """An NDJSON feed of JSON Patches on the seeded resources, or (`creates`) of PUTs of new ones: a directory's
    first load, each line a key of its own."""

    def line(n: int) -> str:
        if creates:
            fresh = {**organization(n), "id": f"new{n}-{lines}"}
            return json.dumps({"request": {"method": "PUT", "url": f"Organization/{fresh['id']}"}, "resource": fresh})
        data = base64.b64encode(json_patch(n)).decode()
        return json.dumps(
            {
                "request": {"method": "PATCH", "url": f"Organization/c{n % ORGS}"},
                "resource": {"resourceType": "Binary", "contentType": JSON_PATCH, "data": data},
            }
        )

    body = ("\n".join(line(n) for n in range(lines)) + "\n").encode()
    accepted_before = counts(base).get("accepted", 0)
    meter, started = CpuMeter(), time.perf_counter()
    with httpx.Client(base_url=f"{base}/fhir", trust_env=False, timeout=600, headers=AUTH) as client:
        answer = client.post("$bulk-submit", content=body, headers={"content-type": "application/fhir+ndjson"})
    intake = time.perf_counter() - started
    wait_ended(base, accepted_before + lines)
    elapsed = time.perf_counter() - started
    total = meter.stop()
    return {
        "lines": lines,
        "creates": creates,
        "status": answer.status_code,
        "intake_lines_per_s": round(lines / intake, 1),
        "applied_lines_per_s": round(lines / elapsed, 1),
        "cpu_ms_per_line": round(total * 1000 / lines, 2),
        "cpu_ms_by_process": {k: round(v * 1000 / lines, 2) for k, v in sorted(meter.by_name.items())},
    }


def transaction(base: str, entries: int) -> dict[str, Any]:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "request": {"method": "PATCH", "url": f"Organization/c{n}"},
                "resource": {
                    "resourceType": "Binary",
                    "contentType": JSON_PATCH,
                    "data": base64.b64encode(json_patch(n)).decode(),
                },
            }
            for n in range(entries)
        ],
    }
    started = time.perf_counter()
    with httpx.Client(base_url=f"{base}/fhir", trust_env=False, timeout=600, headers=AUTH) as client:
        answer = client.post("", json=bundle)
    return {"entries": entries, "status": answer.status_code, "seconds": round(time.perf_counter() - started, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--workers", type=int, default=1, help="Celery workers (the service default: 1)")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker (the default: 2)")
    parser.add_argument("--api-processes", type=int, default=1, help="uvicorn processes")
    parser.add_argument("--async-jobs", type=int, default=2000)
    parser.add_argument("--feed-lines", type=int, default=5000)
    parser.add_argument(
        "--only", default="sync,async,feed,transaction", help="which parts to run (comma-separated; also: creates)"
    )
    parser.add_argument("--formats", default=",".join(FORMATS))
    args = parser.parse_args()
    report: dict[str, Any] = {"cpus": os.cpu_count(), "workers": args.workers, "concurrency": args.concurrency}
    report["api_processes"] = args.api_processes
    with (
        tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp,
        running(args.workers, Path(tmp), args.concurrency, args.api_processes) as (base, _),
    ):
        create(base)
        sync_patches(base, "json-patch", 4, 2)  # warm-up: caches, connections, pool children
        parts = args.only.split(",")
        if "sync" in parts:
            report["sync"] = [
                sync_patches(base, kind, int(c), args.seconds)
                for kind in args.formats.split(",")
                for c in args.clients.split(",")
            ]
        if "async" in parts:
            report["async"] = async_patches(base, args.async_jobs, 8)
        if "feed" in parts:
            report["feed"] = feed(base, args.feed_lines)
        if "creates" in parts:
            report["feed_of_creates"] = feed(base, args.feed_lines, creates=True)
        if "transaction" in parts:
            report["transaction"] = transaction(base, TRANSACTION_ENTRIES)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
