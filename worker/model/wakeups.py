"""The wake-up message a worker publishes when a job ends, and the API reads to answer a waiting client.

One codec for both sides: the worker encodes (worker/service/outcomes.py), the
API decodes (api/waiter.py). The message carries the stored text of the version
the job answers with, so a synchronous answer needs no read of MongoDB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.model.jobs import JobResult, JobState


@dataclass(frozen=True)
class WakeUp:
    job_id: str
    state: JobState
    result: JobResult
    text: str | None  # the stored text of the version the job answers with (None for errors and deletions)

    def encode(self) -> str:
        document = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.result.to_document().items()}
        return json.dumps({"job": self.job_id, "state": self.state.value, "text": self.text, "result": document})

    @classmethod
    def decode(cls, data: bytes | str) -> WakeUp | None:
        """The message, or None when it is not one of ours (the channel is shared by nothing else, but a bad
        message must never break the API's listener)."""
        try:
            message: dict[str, Any] = json.loads(data)
            result = dict(message["result"])
            if isinstance(result.get("lastUpdated"), str):
                result["lastUpdated"] = datetime.fromisoformat(result["lastUpdated"])
            return cls(
                str(message["job"]), JobState(message["state"]), JobResult.from_document(result), message["text"]
            )
        except (ValueError, TypeError, KeyError):
            return None
