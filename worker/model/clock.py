"""The service's clock: UTC, at the millisecond MongoDB keeps (so a time read back equals the time written)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
