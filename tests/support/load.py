"""Load helpers shared by the pipeline tests: patches that append, and job counts from /metrics."""

from __future__ import annotations

import json

import httpx

from tests.support.processes import wait_progress


def identifier_patch(value: str) -> bytes:
    """A JSON Patch appending one identifier: applying it twice, or out of order, shows in the result."""
    return json.dumps(
        [{"op": "add", "path": "/identifier/-", "value": {"system": "urn:test", "value": value}}]
    ).encode()


def job_counts(client: httpx.Client) -> dict[str, float]:
    """accepted/applied/failed/cancelled totals from /metrics."""
    counts = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("fhir_patch_jobs_") and "_total " in line:
            name, value = line.split()
            counts[name.removeprefix("fhir_patch_jobs_").removesuffix("_total")] = float(value)
    return counts


def ended(client: httpx.Client) -> int:
    """Jobs that reached a final state (applied, failed or cancelled)."""
    counts = job_counts(client)
    return int(counts.get("applied", 0) + counts.get("failed", 0) + counts.get("cancelled", 0))


def all_ended(client: httpx.Client, expected: int) -> bool:
    counts = job_counts(client)
    return counts.get("accepted", 0) >= expected and counts["accepted"] == counts.get("applied", 0) + counts.get(
        "failed", 0
    )


def wait_group(client: httpx.Client, location: str, stall_seconds: float = 60) -> httpx.Response:
    """Poll a feed's or batch's status until it ends (200); fail only when its X-Progress stops moving."""
    seen: dict[str, httpx.Response] = {}

    def ended_entries() -> int:
        answer = seen["answer"] = client.get(location)
        if answer.status_code == 200:
            return DONE
        return int(answer.headers.get("x-progress", "0/").split("/")[0] or 0)

    wait_progress(ended_entries, DONE, f"{location} to end", stall_seconds)
    return seen["answer"]


def wait_all_ended(ops: httpx.Client, expected: int, stall_seconds: float = 60) -> None:
    """Until at least `expected` jobs were accepted and every accepted job ended; fail only when no job ends for
    `stall_seconds` (a slow machine is not a fault)."""
    wait_progress(lambda: DONE if all_ended(ops, expected) else ended(ops), DONE, "every job ended", stall_seconds)


DONE = 10**12
