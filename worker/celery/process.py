"""The worker process: a Celery app built from the environment, tasks registered.

`celery -A worker.celery.process worker` (or `fhir-patch worker`) loads this module;
it is the only place a worker reads its settings.
"""

from __future__ import annotations

from celery.signals import worker_ready

from worker.broker import create_celery
from worker.celery.reconciling import start_reconciler
from worker.celery.tasks import register_tasks
from worker.settings import Settings

settings = Settings.from_env()
app = create_celery(settings)
tasks = register_tasks(app, settings)
worker_ready.connect(lambda **_: start_reconciler(tasks, settings), weak=False)
