"""The worker process: a Celery app built from the environment, tasks registered.

`celery -A worker.process worker` (or `fhir-patch worker`) loads this module;
it is the only place a worker reads its settings.
"""

from __future__ import annotations

from worker.celery_app import create_celery
from worker.settings import Settings
from worker.tasks import register_tasks

settings = Settings.from_env()
app = create_celery(settings)
register_tasks(app, settings)
