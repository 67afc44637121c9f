"""Groups of jobs (a bulk feed, a batch Bundle): one record, by key only.

Entry n of group G is job `G-nnnnnnn` (zero-padded), so the group needs no list
of its jobs, a resubmitted feed (same Idempotency-Key, same G) collides line by
line with what was already accepted, and the outcomes of its entries are `_id`
lookups in entry order (JobStore.outcomes).

- `groups`       `_id` G: kind, owner, GET entries, the ids of its refusal
                 blocks; `G/closed`: the intake ended with `total` entries;
                 `G/ended`: every entry ended; `G/refused/n`: the entries refused
                 at intake in one block of lines from n (status and outcome), one
                 document per block rather than one per line, so a feed of bad
                 lines costs little to keep.
                 `G/failures`: the entries that failed in a worker (noted before
                 their results are recorded, so it may name too many, never too
                 few); `owner/<subject>`: the subject's newest groups, a ring of
                 RECENT_GROUPS slots (FerretDB ignores `$push`'s `$slice`).
- `open_groups`  `_id` G while some entry has not ended (bounded by work in
                 flight: the reconciler scans it to notice groups that ended).
- `group_expiry` the groups that ended in each time slot (worker/storage/expiry.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import PyMongoError

from worker.edges import translating
from worker.model.groups import Group, refusal_block
from worker.storage import keyed
from worker.storage.elections import through_elections
from worker.storage.expiry import ExpirySlots

AFTER = ReturnDocument.AFTER
RECENT_GROUPS = 20  # groups listed per owner (GET /fhir/_async): the operator page's list


@translating(PyMongoError, "MongoDB")
class GroupStore:
    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self._groups: Collection[dict[str, Any]] = db["groups"]
        self._open: Collection[dict[str, Any]] = db["open_groups"]
        self._expiry = ExpirySlots(db["group_expiry"])

    def open(
        self, group_id: str, kind: str, now: datetime, reads: dict[int, str] | None = None, owner: str | None = None
    ) -> bool:
        """Record the group; False when it exists already (a resubmission with the same Idempotency-Key).

        `reads`: entry number -> the URL of a GET entry, answered when the Bundle's answer is built."""
        fresh = keyed.insert_one_new(
            self._groups,
            {
                "_id": group_id,
                "kind": kind,
                "createdAt": now,
                "owner": owner,
                "reads": {str(k): v for k, v in (reads or {}).items()},
            },
        )
        if fresh:
            keyed.insert_new(self._open, [{"_id": group_id, "at": now}])
            if owner is not None:
                self._remember(owner, group_id, now)
        return fresh

    def _remember(self, owner: str, group_id: str, now: datetime) -> None:
        """Put the group in the next slot of its owner's ring: one `$inc` by `_id` picks the slot (the document is
        made by the owner's first group), one `$set` by `_id` fills it."""
        key = f"owner/{owner}"
        turn = self._next_turn(key)
        if turn is None and keyed.insert_one_new(self._groups, {"_id": key, "n": 1}):
            turn = 1
        slot = (turn if turn is not None else self._next_turn(key) or 1) % RECENT_GROUPS
        entry = {"$set": {f"s{slot}": {"id": group_id, "at": now}}}
        through_elections(lambda: self._groups.update_one({"_id": key}, entry))

    def _next_turn(self, key: str) -> int | None:
        found = through_elections(
            lambda: self._groups.find_one_and_update({"_id": key}, {"$inc": {"n": 1}}, return_document=AFTER)
        )
        return int(found["n"]) if found is not None else None

    def recent(self, owner: str) -> list[str]:
        """The owner's newest groups, newest first (at most RECENT_GROUPS; some may have expired since)."""
        doc = keyed.get(self._groups, f"owner/{owner}") or {}
        slots = [v for k, v in doc.items() if k.startswith("s") and isinstance(v, dict)]
        return [str(s["id"]) for s in sorted(slots, key=lambda s: s["at"], reverse=True)]

    def note_failures(self, failures: dict[str, list[int]]) -> None:
        """Note entries that failed in a worker, {group: entry numbers}, before their results are recorded."""
        keyed.add_to_sets(
            self._groups, {f"{g}/failures": {"lines": [str(n) for n in ns]} for g, ns in failures.items()}
        )

    def failures(self, group: Group) -> list[int]:
        """The entries noted as failed in a worker, in entry order (their results say whether they did)."""
        doc = keyed.get(self._groups, f"{group.id}/failures") or {}
        return sorted(int(n) for n in doc.get("lines", []))

    def discard(self, group_id: str) -> None:
        """Forget a group whose intake accepted nothing (refused whole by backpressure)."""
        keyed.delete_many(self._open, [group_id])
        keyed.delete_many(self._groups, [group_id])

    def refuse(self, group_id: str, refusals: list[tuple[int, int, dict[str, Any] | None]], now: datetime) -> None:
        """Record entries refused at intake, (number, status, outcome) each, as one block document."""
        if not refusals:
            return
        block = refusal_block(group_id, refusals[0][0])
        # Objects, not nested arrays: FerretDB stores no arrays of arrays.
        entries = [{"n": number, "status": status, "outcome": outcome} for number, status, outcome in refusals]
        keyed.insert_new(self._groups, [keyed.storable({"_id": block, "at": now, "entries": entries})])
        keyed.add_to_sets(self._groups, {group_id: {"refusals": [block]}})

    def refusals(self, group: Group) -> dict[int, dict[str, Any]]:
        """Entry number -> its result event, for the entries refused at intake (a lookup per block)."""
        found: dict[int, dict[str, Any]] = {}
        for _, doc in keyed.get_many(self._groups, group.refusal_blocks):
            for entry in (doc or {}).get("entries", []):
                found[int(entry["n"])] = {
                    "state": "failed",
                    "key": "",
                    "result": {"status": entry["status"], "outcome": entry["outcome"]},
                }
        return found

    def close(self, group_id: str, total: int, rejected: int, now: datetime) -> None:
        """The intake ended with `total` entries. A resubmission's close collides with the first; the first stands."""
        keyed.insert_new(self._groups, [{"_id": f"{group_id}/closed", "total": total, "rejected": rejected, "at": now}])

    def get(self, group_id: str) -> Group | None:
        doc = keyed.get(self._groups, group_id)
        if doc is None:
            return None
        closed = keyed.get(self._groups, f"{group_id}/closed")
        reads = {int(k): str(v) for k, v in (doc.get("reads") or {}).items()}
        return Group(
            group_id,
            doc["kind"],
            doc["createdAt"],
            closed["total"] if closed else None,
            closed["rejected"] if closed else 0,
            reads,
            doc.get("owner"),
            tuple(doc.get("refusals") or ()),
        )

    def expire(self, before: datetime, now: datetime, has_ended: Callable[[Group], bool]) -> Iterator[Group]:
        """Groups seen ended leave the open set and join an expiry slot; those that ended before `before` are
        forgotten and handed out, so the caller removes their entries' outcomes too."""
        for doc in keyed.scan(self._open, {}, {"_id": 1}):  # bounded: groups with entries in flight
            group = self.get(str(doc["_id"]))
            if group is None or has_ended(group):
                if group is not None:
                    keyed.insert_new(self._groups, [{"_id": f"{group.id}/ended", "at": now}])
                    self._expiry.add([group.id], now)
                keyed.delete_many(self._open, [str(doc["_id"])])
        for group_ids in self._expiry.due(before):
            for group_id in group_ids:
                group = self.get(group_id)
                blocks = list(group.refusal_blocks) if group is not None else []
                ids = [group_id, f"{group_id}/closed", f"{group_id}/ended", f"{group_id}/failures", *blocks]
                keyed.delete_many(self._groups, ids)
                if group is not None:
                    yield group
