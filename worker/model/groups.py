"""Groups of entries (feeds, batch Bundles): one record each; their entries are jobs `G-nnnnnnn`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


def entry_job_id(group_id: str, number: int) -> str:
    return f"{group_id}-{number:07d}"


def refusal_block(group_id: str, first: int) -> str:
    """The id of a block of entries refused at intake, named by its first entry (blocks are in entry order)."""
    return f"{group_id}/refused/{first:07d}"


def refusal_block_start(block: str) -> int:
    return int(block.rsplit("/", 1)[1])


def entry_number(job_id: str) -> int:
    """The entry number of a group's job `G-nnnnnnn`."""
    return int(job_id.rsplit("-", 1)[1])


def group_of(job_id: str) -> str:
    """The group a job belongs to ('' for a job on its own)."""
    return job_id.rsplit("-", 1)[0] if "-" in job_id else ""


@dataclass(frozen=True)
class Group:
    id: str
    kind: str
    created_at: datetime
    total: int | None  # entries in the group, once its intake ended
    rejected: int = 0  # entries refused at intake (they have results already)
    reads: dict[int, str] | None = None  # GET entries of a batch Bundle (no job: answered at the end)
    owner: str | None = None  # the subject that submitted it; only it (or a jobs admin) sees it
    refusal_blocks: tuple[str, ...] = ()  # ids of its G/refused/n documents

    def entry_ids(self) -> list[str]:
        return [entry_job_id(self.id, n) for n in range(1, (self.total or 0) + 1)]
