"""MongoDB storage: versioned resources and durable jobs (pymongo lives only here and in the edges)."""

from worker.storage.database import Database
from worker.storage.job_store import IdempotencyConflict, JobStore
from worker.storage.resource_store import ResourceStore, VersionConflict

__all__ = ["Database", "IdempotencyConflict", "JobStore", "ResourceStore", "VersionConflict"]
