"""Wait for jobs to finish, woken through Redis pub/sub (never by polling MongoDB in a loop).

One subscription per API process to the namespace's `done` channel. Every route that answers synchronously
waits the same way, `async with waiter.expect(job_ids) as expected:`, entered *before* the jobs are queued, so a
fast worker cannot finish one unseen; leaving the block forgets whatever was not waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import redis.asyncio as aioredis

from worker.model.wakeups import WakeUp

log = logging.getLogger("fhir_patch.api.waiter")
T = TypeVar("T")


class Expected:
    """The wake-ups one request waits for (made by `ResultWaiter.expect`)."""

    def __init__(self, waiter: ResultWaiter, job_ids: Iterable[str]) -> None:
        self._waiter = waiter
        self._futures = {job_id: waiter.register(job_id) for job_id in job_ids}

    def drop(self, job_ids: Iterable[str]) -> None:
        """Stop waiting for these (they were not queued after all)."""
        for job_id in job_ids:
            if self._futures.pop(job_id, None) is not None:
                self._waiter.forget(job_id)

    async def instead(self, old: str, new: str, look: Callable[[str], Awaitable[T | None]]) -> T | None:
        """Wait for job `new` instead of `old` (an idempotent retry answers with the first request's job, learned
        only after it was queued): `look(new)` once more after registering, since it may have ended in between
        (its wake-up then went unseen); what `look` found, or None (then `wait` for it)."""
        self.drop([old])
        self._futures[new] = self._waiter.register(new)
        found = await look(new)
        if found is not None:
            self.drop([new])
        return found

    async def wait(self, job_id: str, timeout: float) -> WakeUp | None:
        """The job's wake-up, or None after `timeout` seconds."""
        return (await self.wait_all([job_id], timeout))[0]

    async def wait_all(self, job_ids: list[str], timeout: float) -> list[WakeUp | None]:
        """The wake-ups of `job_ids`, in order (None for those not come within `timeout` seconds, all told)."""
        futures = [self._futures[job_id] for job_id in job_ids]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(asyncio.shield(f) for f in futures)), timeout)
        return [f.result() if f.done() and not f.cancelled() else None for f in futures]

    def _close(self) -> None:
        self.drop(list(self._futures))


class ResultWaiter:
    def __init__(self, redis: aioredis.Redis, channel: str) -> None:
        self._redis = redis
        self._channel = channel
        self._futures: dict[str, tuple[asyncio.Future[WakeUp], int]] = {}  # job id -> (future, requests waiting)
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="result-waiter")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=5)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._redis.aclose()

    @contextlib.asynccontextmanager
    async def expect(self, job_ids: Iterable[str]) -> AsyncIterator[Expected]:
        """Wait for the wake-ups of `job_ids` within the block (enter it before they are queued)."""
        expected = Expected(self, job_ids)
        try:
            yield expected
        finally:
            expected._close()

    def register(self, job_id: str) -> asyncio.Future[WakeUp]:
        """The future of `job_id`'s wake-up, shared by every request waiting for it (each `forget`s it once)."""
        future, waiting = self._futures.get(job_id, (None, 0))
        if future is None:
            future = asyncio.get_running_loop().create_future()
        self._futures[job_id] = (future, waiting + 1)
        return future

    def forget(self, job_id: str) -> None:
        future, waiting = self._futures.get(job_id, (None, 0))
        if future is None:
            return
        if waiting > 1:
            self._futures[job_id] = (future, waiting - 1)
        else:
            del self._futures[job_id]

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel)
                    self._subscribed.set()
                    async for message in pubsub.listen():
                        self._deliver(message)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis went away: waiters time out into 202, the subscription comes back
                log.exception("result subscription lost; resubscribing")
                await asyncio.sleep(0.5)

    def _deliver(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        wakeup = WakeUp.decode(message["data"])
        future = self._futures.get(wakeup.job_id, (None, 0))[0] if wakeup is not None else None
        if wakeup is not None and future is not None and not future.done():
            future.set_result(wakeup)
