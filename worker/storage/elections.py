"""Riding out a MongoDB election: the calls of keyed.py are retried while the replica set has no primary.

During a failover MongoDB answers `NotPrimaryError`, drops connections (`AutoReconnect`), or lets a write wait
past its write concern's `wtimeout`. pymongo's retryable writes and reads retry such a call once; an election
can take longer (10 s by default), so each call is retried here with exponential backoff and jitter (tenacity)
for `FHIR_PATCH_MONGODB_RETRY_SECONDS`, then the error goes up (and becomes a 503 with Retry-After, at the
store's edge). Every call retried is safe to repeat: reads; inserts by `_id`, whose repeat finds its own
document ("already there", which each store already takes as the outcome of an earlier attempt: a version's
insert is recognised as its own by its job id); deletes and `$addToSet` updates by `_id`.

The budget is the process's, set once from Settings when the Database opens (the stores call keyed.py as
plain functions, so there is nowhere else to carry it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pymongo.errors import AutoReconnect, BulkWriteError, OperationFailure, PyMongoError, WriteConcernError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

T = TypeVar("T")
# Server codes of "no primary now": NotWritablePrimary, NotPrimaryNoSecondaryOk, NotPrimaryOrSecondary,
# PrimarySteppedDown, InterruptedDueToReplStateChange, WriteConcernFailed (wtimeout), ShutdownInProgress.
_ELECTION_CODES = frozenset({10107, 13435, 13436, 189, 11602, 64, 91})


def is_election(exc: BaseException) -> bool:
    """A failure that a new primary (or a moment) cures: never a duplicate key or a bad command. (NotPrimaryError
    is an AutoReconnect, WTimeoutError a WriteConcernError.)"""
    if isinstance(exc, (AutoReconnect, WriteConcernError)):
        return True
    if isinstance(exc, BulkWriteError):  # a write concern not met: written, maybe not durably; written again
        return bool((exc.details or {}).get("writeConcernErrors"))
    return isinstance(exc, OperationFailure) and exc.code in _ELECTION_CODES


def _retrying(seconds: float) -> Retrying:
    # One instance for the process: tenacity keeps each call's state thread-local, so threads may share it.
    return Retrying(
        retry=retry_if_exception(is_election),
        wait=wait_random_exponential(multiplier=0.05, max=1.0),
        stop=stop_after_delay(seconds),
        reraise=True,
    )


_policy = {"retrying": _retrying(15.0)}


def retry_for(seconds: float) -> None:
    """Set how long a call is retried through an election (Database.open does, from Settings)."""
    _policy["retrying"] = _retrying(seconds)


def through_elections(call: Callable[[], T]) -> T:
    """`call()`, retried through an election for the process's budget; its last error when that runs out. The
    first attempt goes straight through: tenacity (about 20 µs a call) is entered only once an election is seen,
    not on each of the dozen MongoDB calls of every PATCH."""
    try:
        return call()
    except PyMongoError as exc:
        if not is_election(exc):
            raise
    return _policy["retrying"](call)
