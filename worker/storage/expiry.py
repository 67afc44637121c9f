"""Expiry by time slot, by key only: what ended in slot N is listed in the document `slot/N`.

Removing what ended before a time is then a walk over the slots that ended by
then, from a cursor document: each slot one `_id` lookup and one delete, never a
range or a scan. A slot is one second: its document holds what ended in that
second, so adding to it costs the same at any load and any time of day (a slot of
a minute grew to thousands of ids, and FerretDB rewrites the whole document on
each addition). The walk costs one lookup per second of time passed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from worker.edges import translating
from worker.storage import keyed

MAX_SLOTS_PER_PASS = 2000  # after a long stop, expiry catches up over several passes


SLOT_SECONDS = 1.0


@translating(PyMongoError, "MongoDB")
class ExpirySlots:
    def __init__(self, collection: Collection[dict[str, Any]]) -> None:
        self._slots = collection

    def _slot(self, when: datetime) -> int:
        return int(when.timestamp() // SLOT_SECONDS)

    def add(self, ids: list[str], ended: datetime) -> None:
        """`ids` ended at `ended`: one update by `_id` when the slot exists (the usual case), else an insert."""
        if ids and keyed.add_to_set(self._slots, f"slot/{self._slot(ended)}", "ids", ids):
            # A new slot: the walk starts no later than just before it (only the first insert ever counts), so the
            # walk never covers time before anything was added.
            keyed.insert_one_new(self._slots, {"_id": "cursor", "slot": self._slot(ended) - 1})

    def due(self, before: datetime) -> Iterator[list[str]]:
        """The ids of each slot that ended before `before`, oldest first; a slot is forgotten once its ids were
        handed out and the caller asked for the next."""
        cursor = keyed.get(self._slots, "cursor")
        if cursor is None:  # nothing was ever added
            return
        last = self._slot(before) - 1
        first = int(cursor["slot"]) + 1
        stop = min(last, first + MAX_SLOTS_PER_PASS - 1)
        for slot in range(first, stop + 1):
            bucket = keyed.get(self._slots, f"slot/{slot}")
            if bucket is not None:
                yield [str(i) for i in bucket.get("ids", [])]
                keyed.delete_many(self._slots, [f"slot/{slot}"])
        if stop >= first:  # a crash before this line walks the same slots again: handed out again, never lost
            self._slots.replace_one({"_id": "cursor"}, {"_id": "cursor", "slot": stop}, upsert=True)
