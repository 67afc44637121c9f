"""The client side of bulk feeds: `fhir-patch submit FEED --server URL` and `fhir-patch status JOB`.

Streams the feed file (never read whole), then follows the group's progress
with a progress bar (rate, ETA), prints a summary table, and writes the
failed lines (with line number and reason) to a file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

CHUNK = 1 << 16


@dataclass(frozen=True)
class Summary:
    group: str
    counts: dict[str, int]
    seconds: float
    failures_path: Path | None


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as feed:
        while chunk := feed.read(CHUNK):
            yield chunk


def _count_lines(path: Path) -> int:
    count, last = 0, b"\n"
    for chunk in _chunks(path):
        count += chunk.count(b"\n")
        last = chunk[-1:]
    return count + (last != b"\n")


def _counts(parameters: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["valueInteger"] for p in parameters.get("parameter", []) if "valueInteger" in p}


def _auth(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


def submit(
    feed: Path,
    server: str,
    idempotency_key: str | None,
    failures: Path | None,
    console: Console,
    token: str | None = None,
) -> Summary:
    """Send the feed, follow it to the end, write its failures; the summary of what happened."""
    base = server.rstrip("/")
    total = _count_lines(feed)
    headers = {"content-type": "application/fhir+ndjson"}
    if idempotency_key:
        headers["idempotency-key"] = idempotency_key
    started = time.monotonic()
    with httpx.Client(timeout=httpx.Timeout(600.0, connect=10.0), trust_env=False, headers=_auth(token)) as client:
        answer = client.post(f"{base}/$bulk-submit", content=_chunks(feed), headers=headers)
        if answer.status_code != 202:
            raise SystemExit(f"fhir-patch: the server refused the feed: {answer.status_code} {answer.text[:500]}")
        location = answer.headers["content-location"]
        group = location.rsplit("/", 1)[-1]
        counts = _follow(client, location, total, console)
        failures_path = _write_failures(client, location, failures or feed.with_suffix(".failures.ndjson"))
    summary = Summary(group, counts, time.monotonic() - started, failures_path)
    console.print(summary_table(summary))
    if failures_path:
        console.print(f"failed lines: {failures_path}")
    return summary


def _follow(client: httpx.Client, location: str, total: int, console: Console) -> dict[str, int]:
    columns = (
        TextColumn("applying"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} lines/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("feed", total=total, rate="-")
        while True:
            answer = client.get(location)
            counts = _counts(answer.json())
            ended = counts.get("applied", 0) + counts.get("failed", 0)
            speed = bar.tasks[task].speed
            bar.update(task, completed=ended, total=counts.get("total", total), rate=f"{speed:,.0f}" if speed else "-")
            if answer.status_code == 200:
                return counts
            time.sleep(0.5)


def _write_failures(client: httpx.Client, location: str, path: Path) -> Path | None:
    written = 0
    with client.stream("GET", f"{location}/results") as results, path.open("w") as out:
        for line in results.iter_lines():
            if line and not json.loads(line)["status"].startswith("2"):
                out.write(line + "\n")
                written += 1
    if not written:
        path.unlink()
        return None
    return path


def summary_table(summary: Summary) -> Table:
    table = Table(title=f"feed {summary.group}")
    for column in ("total", "applied", "failed", "of which refused at intake", "seconds", "lines/s"):
        table.add_column(column, justify="right")
    c = summary.counts
    total = c.get("total", 0)
    table.add_row(
        str(total),
        str(c.get("applied", 0)),
        str(c.get("failed", 0)),
        str(c.get("rejected", 0)),
        f"{summary.seconds:.1f}",
        f"{total / summary.seconds:,.0f}" if summary.seconds else "-",
    )
    return table


def status(job: str, server: str, console: Console, token: str | None = None) -> int:
    """Show any job or feed: its HTTP answer, progress, and counts or result."""
    with httpx.Client(timeout=30, trust_env=False, headers=_auth(token)) as client:
        answer = client.get(f"{server.rstrip('/')}/_async/{job}")
    console.print(
        f"{answer.status_code} {answer.reason_phrase}"
        + (f"  progress: {answer.headers['x-progress']}" if "x-progress" in answer.headers else "")
    )
    body = answer.json() if answer.content else {}
    if body.get("resourceType") == "Parameters":
        table = Table()
        table.add_column("count")
        table.add_column("value", justify="right")
        for name, value in _counts(body).items():
            table.add_row(name, str(value))
        console.print(table)
    elif body:
        console.print_json(json.dumps(body))
    return 0 if answer.status_code in (200, 202) else 1
