"""Bulk feed benchmark; prints JSON.

    python bench/feed.py [--lines 20000] [--resources 2000] [--invalid 0.1] [--workers 2]

Starts its own services, the API and N worker processes; creates the
resources; generates an NDJSON feed (FHIRPath Patch, Binary JSON Patch and
Binary XML Patch lines in turn, a share of them invalid in several ways) and
streams it to `POST /fhir/$bulk-submit`; measures lines per second from the
first byte sent to the last line ended, and the peak memory of the API and of
each worker process.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import counts, peak_rss_mib, running, wait_ended  # noqa: E402

INVALID = [
    lambda r: "{not json",
    lambda r: json.dumps({"request": {"method": "PATCH", "url": f"Organization/{r}"}, "resource": {"resourceType": "Binary",
                          "contentType": "text/plain", "data": "eA=="}}),
    lambda r: json.dumps({"request": {"method": "PATCH", "url": f"Nonsense/{r}"}, "resource": {"resourceType": "Parameters"}}),
    lambda r: json.dumps({"request": {"method": "PATCH", "url": "Organization/does-not-exist"}, "resource": _binary(
        "application/json-patch+json", '[{"op":"add","path":"/active","value":true}]')}),
    lambda r: json.dumps({"request": {"method": "PATCH", "url": f"Organization/{r}"}, "resource": _binary(
        "application/json-patch+json", '[{"op":"replace","path":"/nosuch","value":1}]')}),
]


def _binary(content_type: str, patch: str) -> dict[str, Any]:
    return {"resourceType": "Binary", "contentType": content_type, "data": base64.b64encode(patch.encode()).decode()}


def valid_line(n: int, resource: str) -> str:
    value = f"alias-{n}"
    kind = n % 3
    if kind == 0:
        parts = [{"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Organization"},
                 {"name": "name", "valueString": "alias"}, {"name": "value", "valueString": value}]
        body: dict[str, Any] = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": parts}]}
    elif kind == 1:
        body = _binary("application/json-patch+json", json.dumps([{"op": "add", "path": "/alias/-", "value": value}]))
    else:
        body = _binary("application/xml-patch+xml", f'<Patch xmlns="http://hl7.org/fhir"><add sel="/Organization"><alias value="{value}"/></add></Patch>')
    return json.dumps({"request": {"method": "PATCH", "url": f"Organization/{resource}"}, "resource": body})


def feed_lines(lines: int, resources: int, invalid: float) -> Iterator[str]:
    """Line n targets resource n % resources; every 1/invalid-th line is broken (in turn, each way above)."""
    every = round(1 / invalid) if invalid else 0
    for n in range(1, lines + 1):
        resource = f"org{n % resources}"
        if every and n % every == 0:
            yield INVALID[(n // every) % len(INVALID)](resource)
        else:
            yield valid_line(n, resource)


def create(base: str, resources: int) -> None:
    with httpx.Client(base_url=f"{base}/fhir", trust_env=False, timeout=60) as client:
        lines = (json.dumps({"request": {"method": "PUT", "url": f"Organization/org{r}"},
                             "resource": {"resourceType": "Organization", "id": f"org{r}", "name": "start", "alias": ["start"]}})
                 for r in range(resources))
        answer = client.post("$bulk-submit", content=("\n".join(lines) + "\n").encode(), headers={"content-type": "application/fhir+ndjson"})
        answer.raise_for_status()
    wait_ended(base, counts(base)["accepted"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--resources", type=int, default=2_000)
    parser.add_argument("--invalid", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, running(args.workers, Path(tmp)) as (base, procs):
        create(base, args.resources)
        started = time.perf_counter()
        with httpx.Client(base_url=f"{base}/fhir", trust_env=False, timeout=600) as client:
            body = (f"{line}\n".encode() for line in feed_lines(args.lines, args.resources, args.invalid))
            accepted = client.post("$bulk-submit", content=body, headers={"content-type": "application/fhir+ndjson"})
            intake = time.perf_counter() - started
            location = accepted.headers["content-location"]
            while client.get(location).status_code != 200:
                time.sleep(0.1)
            total = time.perf_counter() - started
            final = {p["name"]: p.get("valueInteger") for p in client.get(location).json()["parameter"]}
        report = {"lines": args.lines, "resources": args.resources, "invalid_share": args.invalid, "workers": args.workers,
                  "cpus": os.cpu_count(), "seconds": round(total, 2), "lines_per_second": round(args.lines / total, 1),
                  "intake_seconds": round(intake, 2), "counts": final,
                  "peak_rss_mib": {"api": peak_rss_mib(procs[-1]), **{f"worker{n}": peak_rss_mib(p) for n, p in enumerate(procs[:-1])}}}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
