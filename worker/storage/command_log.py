"""Record the shape of every command sent to MongoDB (FHIR_PATCH_MONGODB_COMMAND_LOG), for the storage-rule test.

One JSON line per command: its name, collection, and for each filter (find,
update, delete, findAndModify, count, aggregate, distinct) its shape: whether it
is an equality on `_id` alone, else the fields and operators it uses. Values are
never written, so no health data reaches the file. Lines are appended whole
(O_APPEND, each under PIPE_BUF), so the API and every worker may share one file.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pymongo import monitoring

_FILTERED = {
    "find": ("filter",),
    "update": ("updates", "q"),
    "delete": ("deletes", "q"),
    "findAndModify": ("query",),
    "count": ("query",),
    "aggregate": ("pipeline",),
    "distinct": ("query",),
}


def shape(query: Any) -> str:
    """ "_id=" for an equality on `_id` alone (a scalar value); otherwise the fields and operators used."""
    if not isinstance(query, dict):
        return f"<{type(query).__name__}>"
    if set(query) == {"_id"} and not isinstance(query["_id"], (dict, list)):
        return "_id="
    parts = []
    for field, value in sorted(query.items()):
        operators = sorted(k for k in value if str(k).startswith("$")) if isinstance(value, dict) else []
        parts.append(f"{field}{''.join(operators) or '='}")
    return ",".join(parts) or "{}"


def _filters(name: str, command: dict[str, Any]) -> list[str]:
    where = _FILTERED.get(name)
    if where is None:
        return []
    value = command.get(where[0])
    if len(where) == 2:
        return [shape(item.get(where[1])) for item in value or []]
    if name == "aggregate":
        return ["aggregate"]
    return [shape(value or {})]


class CommandRecorder(monitoring.CommandListener):
    def __init__(self, path: str) -> None:
        self._path = path

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        command = dict(event.command)
        line = {
            "pid": os.getpid(),
            "command": name,
            "collection": command.get(name) if isinstance(command.get(name), str) else None,
            "filters": _filters(name, command),
            "sort": sorted(command.get("sort") or {}) if name == "find" else [],
        }
        data = (json.dumps(line) + "\n").encode()
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass
