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
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import AUTH, counts, peak_rss_mib, running, wait_ended  # noqa: E402

from devkit.feeds import feed_lines  # noqa: E402


def create(base: str, resources: int) -> None:
    with httpx.Client(base_url=f"{base}/fhir", trust_env=False, timeout=60, headers=AUTH) as client:
        lines = (
            json.dumps(
                {
                    "request": {"method": "PUT", "url": f"Organization/org{r}"},
                    "resource": {"resourceType": "Organization", "id": f"org{r}", "name": "start", "alias": ["start"]},
                }
            )
            for r in range(resources)
        )
        answer = client.post(
            "$bulk-submit",
            content=("\n".join(lines) + "\n").encode(),
            headers={"content-type": "application/fhir+ndjson"},
        )
        answer.raise_for_status()
    wait_ended(base, counts(base)["accepted"])


def feed_arguments(doc: str | None) -> argparse.Namespace:
    """The options of a feed benchmark (this one and bench/dry_feed.py): lines, resources, invalid share, workers."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--resources", type=int, default=2_000)
    parser.add_argument("--invalid", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=2)
    return parser.parse_args()


def main() -> None:
    args = feed_arguments(__doc__)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, running(args.workers, Path(tmp)) as (base, procs):
        create(base, args.resources)
        started = time.perf_counter()
        with httpx.Client(base_url=f"{base}/fhir", trust_env=False, timeout=600, headers=AUTH) as client:
            body = (f"{line}\n".encode() for line in feed_lines(args.lines, args.resources, args.invalid))
            accepted = client.post("$bulk-submit", content=body, headers={"content-type": "application/fhir+ndjson"})
            intake = time.perf_counter() - started
            location = accepted.headers["content-location"]
            while client.get(location).status_code != 200:
                time.sleep(0.1)
            total = time.perf_counter() - started
            final = {p["name"]: p.get("valueInteger") for p in client.get(location).json()["parameter"]}
        report = {
            "lines": args.lines,
            "resources": args.resources,
            "invalid_share": args.invalid,
            "workers": args.workers,
            "cpus": os.cpu_count(),
            "seconds": round(total, 2),
            "lines_per_second": round(args.lines / total, 1),
            "intake_seconds": round(intake, 2),
            "counts": final,
            "peak_rss_mib": {
                "api": peak_rss_mib(procs[-1]),
                **{f"worker{n}": peak_rss_mib(p) for n, p in enumerate(procs[:-1])},
            },
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
