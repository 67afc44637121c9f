#!/usr/bin/env python3
"""Prove that a FerretDB build looks up `_id` through its index: EXPLAIN QUERY PLAN must say so.

    python scripts/ferretdb-index-check.py FERRETDB_BINARY

Starts the binary on a throwaway SQLite folder (loopback only, telemetry off, debug log, in which FerretDB
writes every SQL statement it sends), creates a collection and looks a document up by `_id`, stops it, then
asks SQLite for the plan of exactly the SELECT the binary sent for that lookup. Exit 1 when the plan scans.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pymongo import MongoClient

PROBE = "Patient/7/1"
_SENT = re.compile(r'>>> (SELECT .* WHERE .*)\t(\{"args":.*\})$')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def exercise(binary: str, folder: Path) -> tuple[str, list[str]]:
    """The SELECT (and its arguments) the binary sent to SQLite for a find by `_id`."""
    port = free_port()
    argv = [
        binary,
        "--handler=sqlite",
        f"--sqlite-url=file:{folder}/",
        f"--listen-addr=127.0.0.1:{port}",
        f"--debug-addr=127.0.0.1:{free_port()}",
        f"--state-dir={folder}",
        "--telemetry=disable",
        "--log-level=debug",
    ]
    log = folder / "ferretdb.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        client: MongoClient[dict[str, object]] = MongoClient(
            f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=20000
        )
        collection = client["check"]["versions"]
        collection.insert_many([{"_id": f"Patient/{n}/1", "n": n} for n in range(100)])
        assert collection.find_one({"_id": PROBE}) == {"_id": PROBE, "n": 7}
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    for line in log.read_text().splitlines():
        found = _SENT.search(line)
        if found and json.dumps(PROBE) in json.loads(found[2])["args"]:
            return found[1], list(json.loads(found[2])["args"])
    raise SystemExit("ferretdb-index-check: the binary logged no SELECT for the _id lookup")


def plan(folder: Path, query: str, args: list[str]) -> list[str]:
    database = sqlite3.connect(folder / "check.sqlite")
    try:
        return [str(row[-1]) for row in database.execute(f"EXPLAIN QUERY PLAN {query}", args).fetchall()]
    finally:
        database.close()


def main() -> int:
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="ferretdb-check-") as tmp:
        started = time.monotonic()
        query, args = exercise(binary, Path(tmp))
        details = plan(Path(tmp), query, args)
    if not any("USING INDEX" in d or "USING COVERING INDEX" in d for d in details):
        print(f"ferretdb-index-check: an _id lookup scans: {query} -> {details}", file=sys.stderr)
        return 1
    print(
        f"ferretdb-index-check: _id lookups use the index ({'; '.join(details)}; {time.monotonic() - started:.1f}s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
