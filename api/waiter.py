"""Wait for jobs to finish, woken through Redis pub/sub (never by polling MongoDB in a loop).

One subscription per API process to the namespace's `done` channel; each
waiting request registers a future for its job id *before* the job is
queued, so a fast worker cannot finish it unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio as aioredis

from worker.model.wakeups import WakeUp

log = logging.getLogger("fhir_patch.api.waiter")


class ResultWaiter:
    def __init__(self, redis_url: str, channel: str) -> None:
        self._redis = aioredis.Redis.from_url(redis_url, socket_connect_timeout=3)
        self._channel = channel
        self._futures: dict[str, asyncio.Future[WakeUp]] = {}
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

    def register(self, job_id: str) -> asyncio.Future[WakeUp]:
        future = self._futures.get(job_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._futures[job_id] = future
        return future

    def forget(self, job_id: str) -> None:
        self._futures.pop(job_id, None)

    async def wait(self, job_id: str, future: asyncio.Future[WakeUp], timeout: float) -> WakeUp | None:
        """The finished job's message, or None after `timeout` seconds."""
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return None
        finally:
            self.forget(job_id)

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
        future = self._futures.get(wakeup.job_id) if wakeup is not None else None
        if wakeup is not None and future is not None and not future.done():
            future.set_result(wakeup)
