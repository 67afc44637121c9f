"""Transaction Bundles as one job: its entries, FHIR processing order, and the all-or-nothing plan (pure, no I/O).

The API turns a transaction Bundle into one job whose body lists the entries
(each a checked JobRequest with its Bundle index). The worker, holding the
leases of every resource involved, plans all entries in memory in the order
FHIR defines (DELETE, POST, PUT, PATCH; reads are answered afterwards); the
first entry that fails fails the whole transaction with that entry's status
and an OperationOutcome naming it, and nothing is written.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.errors import FhirError, Issue
from worker.model.changes import ClientPolicies, Existing, PlannedChange, plan_change
from worker.model.jobs import Action, JobRequest
from worker.model.tenants import queue_key
from worker.patch.policy import ElementPolicies

FHIR_ORDER: Mapping[Action, int] = {Action.DELETE: 0, Action.CREATE: 1, Action.UPDATE: 2, Action.PATCH: 3}


@dataclass(frozen=True)
class TransactionEntry:
    index: int  # position in Bundle.entry
    request: JobRequest


class EntryFailed(Exception):
    """An entry of the transaction cannot be applied: the transaction's answer is this entry's error."""

    def __init__(self, entry: TransactionEntry, error: FhirError) -> None:
        super().__init__(error.diagnostics)
        self.entry = entry
        where = f"Bundle.entry[{entry.index}]"
        self.status = error.status
        self.outcome = {
            "resourceType": "OperationOutcome",
            "issue": [
                Issue(i.code, f"{where}: {i.diagnostics}", (where, *i.expression), i.severity).to_fhir()
                for i in error.issues
            ],
        }


def encode_entries(entries: list[TransactionEntry]) -> bytes:
    return json.dumps(
        [
            {
                "index": e.index,
                "request": {**e.request.to_document(), "body": base64.b64encode(e.request.body).decode()},
            }
            for e in entries
        ]
    ).encode()


def decode_entries(body: bytes) -> list[TransactionEntry]:
    return [
        TransactionEntry(
            item["index"],
            JobRequest.from_document({**item["request"], "body": base64.b64decode(item["request"]["body"])}),
        )
        for item in json.loads(body)
    ]


def in_fhir_order(entries: list[TransactionEntry]) -> list[TransactionEntry]:
    return sorted(entries, key=lambda e: (FHIR_ORDER[e.request.action], e.index))


def transaction_keys(entries: list[TransactionEntry], tenant: str) -> list[str]:
    """The queue keys of the entries' resources in `tenant`, sorted (the order leases and queues are taken in)."""
    return sorted({queue_key(tenant, e.request.key) for e in entries})


def plan_transaction(
    entries: list[TransactionEntry],
    existing: Mapping[str, Existing | None],
    policies: ElementPolicies,
    client_policies: ClientPolicies | None = None,
) -> list[tuple[TransactionEntry, PlannedChange]]:
    """Every entry's change, in FHIR order; EntryFailed at the first that cannot be made."""
    planned = []
    for entry in in_fhir_order(entries):
        try:
            planned.append(
                (entry, plan_change(entry.request, existing.get(entry.request.key), policies, client_policies))
            )
        except FhirError as exc:
            raise EntryFailed(entry, exc) from exc
    return planned


def entry_results(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-entry results a committed transaction recorded (index, key, status, versionId, lastUpdated)."""
    return list(document.get("entries") or [])
