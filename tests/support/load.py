"""Load helpers shared by the pipeline tests: patches that append, and job counts from /metrics."""

from __future__ import annotations

import json

import httpx


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
    """Jobs that reached a final state (applied or failed)."""
    counts = job_counts(client)
    return int(counts.get("applied", 0) + counts.get("failed", 0))


def all_ended(client: httpx.Client, expected: int) -> bool:
    counts = job_counts(client)
    return counts.get("accepted", 0) >= expected and counts["accepted"] == counts.get("applied", 0) + counts.get(
        "failed", 0
    )
