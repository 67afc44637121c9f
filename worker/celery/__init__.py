"""The Celery wiring: the app and its configuration, the tasks (adapters only), each process's runtime."""
