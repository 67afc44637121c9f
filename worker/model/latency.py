"""The latency histogram's buckets: seconds from a job's acceptance to its end, as clients feel it."""

from __future__ import annotations

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def latency_bucket(seconds: float) -> str:
    """The histogram bucket (upper bound) a latency falls in."""
    return next((str(b) for b in LATENCY_BUCKETS if seconds <= b), "+Inf")
