"""Operational endpoints: liveness and readiness."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from api.auth import authenticated
from api.dependencies import Connections
from api.metrics import MetricsCollector
from worker.errors import Forbidden

router = APIRouter()


def _timed(check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = {"status": "ok", **check()}
    except Exception as exc:  # a readiness probe reports any failure, it never raises
        detail = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    detail["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return detail


def _redis(conn: Connections) -> dict[str, Any]:
    conn.readings.ping()
    return {}


def _mongodb(conn: Connections) -> dict[str, Any]:
    reply = conn.backends.ping_mongodb()
    return {"ok": reply.get("ok")}


def _queues(conn: Connections) -> dict[str, Any]:
    """Ready while any community's queues are in sync: one whose registry cannot be read (its jobs wait) is named,
    but keeps no other community from being served."""
    tenants = list(conn.backends.registries)
    restoring = conn.readings.unsynced(tenants)
    if len(restoring) == len(tenants):
        raise RuntimeError(
            "the queues are being rebuilt from MongoDB (Redis is new or lost its data); new jobs wait until then"
        )
    return {"restoring": restoring} if restoring else {}


def _progress(conn: Connections) -> dict[str, Any]:
    waiting, quiet = conn.readings.stalled_for()
    if waiting and quiet > conn.settings.stall_seconds:
        raise RuntimeError(
            f"{waiting} jobs are waiting and none has finished for {quiet:.0f}s "
            f"(FHIR_PATCH_STALL_SECONDS={conn.settings.stall_seconds:g})"
        )
    return {"waiting": waiting, "seconds_since_progress": round(quiet, 1)}


def _workers(conn: Connections) -> dict[str, Any]:
    names = conn.readings.workers_answering(conn.settings.worker_ping_timeout_seconds)
    if not names:
        raise RuntimeError("no Celery worker answered the ping")
    return {"workers": names}


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive and serving requests."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """Redis and MongoDB reachable, the queues in sync with MongoDB, at least one worker answering, and jobs
    finishing when some are waiting: 200, else 503."""
    conn: Connections = request.app.state.connections
    checks = {
        "redis": _timed(lambda: _redis(conn)),
        "mongodb": _timed(lambda: _mongodb(conn)),
        "queues": _timed(lambda: _queues(conn)),
        "worker": _timed(lambda: _workers(conn)),
        "progress": _timed(lambda: _progress(conn)),
    }
    ready = all(c["status"] == "ok" for c in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )


async def metrics_reader(request: Request) -> None:
    """/metrics needs the scope system/metrics.read, unless FHIR_PATCH_METRICS_LOOPBACK admits loopback clients."""
    conn: Connections = request.app.state.connections
    if conn.settings.metrics_loopback and request.client is not None and _loopback(request.client.host):
        return
    caller = await authenticated(request)
    if not caller.grants.metrics:
        raise Forbidden("/metrics needs the scope system/metrics.read")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@router.get("/metrics", dependencies=[Depends(metrics_reader)])
def metrics(request: Request) -> Response:
    """Prometheus text format: jobs accepted/applied/failed, queue depth, accept-to-finish latency (all processes)."""
    conn: Connections = request.app.state.connections
    registry = CollectorRegistry()
    registry.register(MetricsCollector(conn.readings))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
