"""Callback retries: exponential backoff with full jitter, bounded below and capped."""

from __future__ import annotations

import random

from worker.service.callbacks import FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS, retry_delay


def test_delays_stay_within_the_growing_ceiling_and_never_below_half_the_first() -> None:
    rng = random.Random(7)
    for attempts in range(1, 15):
        ceiling = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** (attempts - 1))
        delays = [retry_delay(attempts, rng) for _ in range(300)]
        assert all(FIRST_RETRY_SECONDS / 2 <= d <= max(ceiling, FIRST_RETRY_SECONDS / 2) for d in delays), attempts
        if ceiling >= 8:  # full jitter: spread over the whole range, not bunched at the ceiling
            assert min(delays) < ceiling / 4 and max(delays) > ceiling * 3 / 4, attempts


def test_the_ceiling_grows_then_stops_at_the_cap() -> None:
    rng = random.Random(11)
    highest = [max(retry_delay(attempts, rng) for _ in range(500)) for attempts in (1, 4, 7, 20, 40)]
    assert highest[0] <= 1.0 < highest[1] <= 8.0 < highest[2] <= 64.0 < highest[3] <= MAX_RETRY_SECONDS
    assert highest[4] <= MAX_RETRY_SECONDS, "capped however many attempts"


def test_the_same_random_source_gives_the_same_delays() -> None:
    assert [retry_delay(5, random.Random(3)) for _ in range(3)] == [retry_delay(5, random.Random(3))] * 3
