"""Celery tasks: thin adapters over worker.service. No business logic here."""

from __future__ import annotations

from celery import Celery

from worker.settings import Settings


def register_tasks(app: Celery, settings: Settings) -> None:
    """Register the project's tasks on `app`; each task only adapts a service call."""
    del app, settings  # the patch tasks are registered here as the service grows
