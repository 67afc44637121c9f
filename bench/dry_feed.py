"""A feed's dry run timed against the real feed, on the same service and data; prints JSON.

    python bench/dry_feed.py [--lines 20000] [--resources 2000] [--invalid 0.1] [--workers 2]

Starts its own services, creates the resources, then sends the same NDJSON feed (bench/feed.py's mix: FHIRPath
Patch, Binary JSON Patch and Binary XML Patch lines, a share invalid) twice: first with `?dryRun=true` (timed
from the first byte sent to the last result line received), then for real (timed to the last line ended).
It also says whether the two gave the same status on every line, and the API's peak memory.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from feed import create, feed_arguments  # noqa: E402
from harness import AUTH, peak_rss_mib, running  # noqa: E402

from devkit.feeds import feed_lines  # noqa: E402

NDJSON = {"content-type": "application/fhir+ndjson"}


def main() -> None:
    args = feed_arguments(__doc__)
    lines = [f"{line}\n".encode() for line in feed_lines(args.lines, args.resources, args.invalid)]
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, running(args.workers, Path(tmp)) as (base, procs):
        create(base, args.resources)
        with httpx.Client(base_url=f"{base}/fhir", trust_env=False, timeout=3600, headers=AUTH) as client:
            started = time.perf_counter()
            dry = client.post("$bulk-submit", params={"dryRun": "true"}, content=iter(lines), headers=NDJSON)
            dry_seconds = time.perf_counter() - started
            dry.raise_for_status()
            dry_status = [json.loads(line)["status"] for line in dry.text.splitlines()]
            started = time.perf_counter()
            accepted = client.post("$bulk-submit", content=iter(lines), headers=NDJSON)
            location = accepted.headers["content-location"]
            while client.get(location).status_code != 200:
                time.sleep(0.1)
            real_seconds = time.perf_counter() - started
            real_status = [json.loads(line)["status"] for line in client.get(f"{location}/results").text.splitlines()]
        report = {
            "lines": args.lines,
            "resources": args.resources,
            "invalid_share": args.invalid,
            "workers": args.workers,
            "cpus": os.cpu_count(),
            "dry_run": {"seconds": round(dry_seconds, 2), "lines_per_second": round(args.lines / dry_seconds, 1)},
            "real": {"seconds": round(real_seconds, 2), "lines_per_second": round(args.lines / real_seconds, 1)},
            "dry_over_real_speed": round(real_seconds / dry_seconds, 2),
            "same_status_on_every_line": dry_status == real_status,
            "lines_differing": sum(d != r for d, r in zip(dry_status, real_status)),
            "api_peak_rss_mib": peak_rss_mib(procs[-1]),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
