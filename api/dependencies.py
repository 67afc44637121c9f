"""Connections the API holds for its lifetime, built once from Settings."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery
from pymongo import MongoClient

from worker.celery_app import create_celery
from worker.settings import Settings


@dataclass(frozen=True)
class Connections:
    settings: Settings
    redis: redis.Redis
    mongo: "MongoClient[dict[str, object]]"
    celery: Celery

    @classmethod
    def open(cls, settings: Settings) -> Connections:
        return cls(
            settings=settings,
            redis=redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2),
            mongo=MongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000, tz_aware=True),
            celery=create_celery(settings),
        )

    def close(self) -> None:
        self.redis.close()
        self.mongo.close()
        self.celery.close()
