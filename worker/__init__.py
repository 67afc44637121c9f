"""fhir-patch-worker: the patch engine (worker.patch), storage, ordering and Celery tasks."""
