"""Directory scale: is the cost per request the same at 100,000 stored resources as at 1,000? JSON out.

    .venv/bin/python bench/scale.py [--sizes 1000,10000,100000] [--samples 200] [--workers 2]

Starts its own Redis, MongoDB-protocol server (FerretDB with the _id index fix, unless MONGODB_URI is set), API
and workers. For each size N it first grows the store to N Organizations (about 2 KB each, one identifier each)
with NDJSON feeds of creates, timing the feed, then measures p50/p99 of read, vread, history, sync JSON Patch,
sync FHIRPath Patch, conditional PATCH by identifier, create, and polling a finished job (closed loop, one
client). At the largest N it also sends sync JSON Patches open loop at 50 requests/s for 20 s.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import AUTH, open_loop, running  # noqa: E402

from devkit.fhirpath import fhirpath_replace  # noqa: E402

JSON_PATCH = {"content-type": "application/json-patch+json"}
FHIR_JSON = {"content-type": "application/fhir+json"}
SYSTEM = "urn:oid:1.2.250.1.71.4.2.2"


def organization(n: int) -> dict[str, Any]:
    """About 2 KB, as a directory's Organization."""
    return {
        "resourceType": "Organization",
        "id": f"o{n}",
        "active": True,
        "identifier": [{"system": SYSTEM, "value": f"v{n}"}],
        "name": f"Centre hospitalier numero {n}",
        "alias": [f"CH {n}", f"Hopital {n}"],
        "telecom": [
            {"system": "phone", "value": f"+33 1 {n % 100:02d} 00 00 00", "use": "work"},
            {"system": "email", "value": f"contact{n}@example.org"},
        ],
        "address": [
            {
                "use": "work",
                "line": [f"{n} rue de la Sante", "Batiment B"],
                "city": "Paris",
                "postalCode": "75014",
                "country": "FRA",
            }
        ],
        "type": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                        "code": "prov",
                        "display": "Healthcare Provider",
                    }
                ]
            }
        ],
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">' + "Organisation de soins. " * 40 + "</div>",
        },
    }


def grow(client: httpx.Client, start: int, stop: int) -> float:
    """Create Organizations start..stop-1 with one NDJSON feed; lines per second until every line ended."""
    lines = "\n".join(
        json.dumps({"resource": organization(n), "request": {"method": "PUT", "url": f"Organization/o{n}"}})
        for n in range(start, stop)
    ).encode()
    began = time.perf_counter()
    answer = client.post(
        "$bulk-submit", content=lines, headers={"content-type": "application/fhir+ndjson"}, timeout=3600
    )
    location = answer.headers["content-location"]
    while client.get(location).status_code == 202:
        time.sleep(0.5)
    return round((stop - start) / (time.perf_counter() - began), 1)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 2),
    }


def timed(count: int, call: Callable[[int], httpx.Response], ok: tuple[int, ...] = (200, 201)) -> dict[str, float]:
    samples, errors = [], 0
    for n in range(count):
        began = time.perf_counter()
        answer = call(n)
        samples.append(time.perf_counter() - began)
        errors += answer.status_code not in ok
    return {**percentiles(samples), "errors": errors}


RENAME = fhirpath_replace("Organization.name", {"valueString": "Renamed"})


def _finished_job(client: httpx.Client, url: str) -> str:
    """The status URL of an async PATCH, once it finished."""
    location = client.patch(
        url, content=b'[{"op":"add","path":"/active","value":true}]', headers={**JSON_PATCH, "prefer": "respond-async"}
    ).headers["content-location"]
    while client.get(location).status_code == 202:
        time.sleep(0.05)
    return str(location)


def latencies(client: httpx.Client, size: int, samples: int) -> dict[str, Any]:
    rng = random.Random(size)
    pick = [rng.randrange(size) for _ in range(samples)]
    fhirpath = RENAME
    finished = [_finished_job(client, f"Organization/o{pick[0]}")]
    return {
        "read": timed(samples, lambda n: client.get(f"Organization/o{pick[n]}")),
        "vread": timed(samples, lambda n: client.get(f"Organization/o{pick[n]}/_history/1")),
        "history": timed(samples, lambda n: client.get(f"Organization/o{pick[n]}/_history")),
        "sync_json_patch": timed(
            samples,
            lambda n: client.patch(
                f"Organization/o{pick[n]}",
                content=json.dumps([{"op": "replace", "path": "/name", "value": f"N{n}"}]).encode(),
                headers=JSON_PATCH,
            ),
        ),
        "sync_fhirpath_patch": timed(
            samples, lambda n: client.patch(f"Organization/o{pick[n]}", json=fhirpath, headers=FHIR_JSON)
        ),
        "conditional_patch": timed(
            samples,
            lambda n: client.patch(
                f"Organization?identifier={SYSTEM}|v{pick[n]}",
                content=b'[{"op":"replace","path":"/active","value":true}]',
                headers=JSON_PATCH,
            ),
        ),
        "create": timed(samples, lambda n: client.post("Organization", json=_unlisted(organization(n), f"{size}-{n}"))),
        "poll_finished_job": timed(samples, lambda n: client.get(finished[0])),
    }


def _unlisted(resource: dict[str, Any], tag: str) -> dict[str, Any]:
    """A new resource (no id) whose identifier no seeded one has, so conditional PATCHes still match one each."""
    rest = {k: v for k, v in resource.items() if k != "id"}
    return {**rest, "identifier": [{"system": SYSTEM, "value": f"created-{tag}"}]}


def sync_patches_at(base: str, size: int, rate: float, seconds: float) -> dict[str, Any]:
    body = b'[{"op":"replace","path":"/active","value":false}]'
    samples, errors = open_loop(
        base,
        rate,
        seconds,
        lambda client, n: client.patch(f"Organization/o{(n * 7919) % size}", content=body, headers=JSON_PATCH),
    )
    return {"rate_per_second": rate, "requests": len(samples), "errors": errors, **percentiles(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    report: dict[str, Any] = {"sizes": {}}
    with (
        tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp,
        running(args.workers, Path(tmp)) as (base, _procs),
        httpx.Client(base_url=f"{base}/fhir", trust_env=False, timeout=60, headers=AUTH) as client,
    ):
        stored = 0
        for size in sizes:
            rate = grow(client, stored, size)
            stored = size
            report["sizes"][str(size)] = {"feed_of_creates_lines_per_s": rate, **latencies(client, size, args.samples)}
            print(json.dumps({"progress": size, **report["sizes"][str(size)]}), file=sys.stderr, flush=True)
        report["sync_patch_at_50_per_s"] = sync_patches_at(base, stored, 50.0, 20.0)
    small, large = report["sizes"][str(sizes[0])], report["sizes"][str(sizes[-1])]
    report["ratio_largest_to_smallest_p50"] = {
        k: round(large[k]["p50_ms"] / small[k]["p50_ms"], 2) for k in small if isinstance(small[k], dict)
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
