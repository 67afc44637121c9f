"""The whole service for a test: real Celery worker processes and the real API, on the real Redis and MongoDB."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devkit.procfs import peak_rss_mib  # noqa: F401  (re-exported for the tests)
from tests.support.processes import api_argv, free_port, started, wait_for, wait_http_ok, worker_argv
from tests.support.tokens import ADMIN_SCOPE, TokenIssuer

# Short lease and reconcile interval so crash tests recover in seconds, not minutes.
FAST_RECOVERY = {"FHIR_PATCH_LEASE_SECONDS": "2", "FHIR_PATCH_RECONCILE_INTERVAL_SECONDS": "0.5"}
# Tests that assert a synchronous 200/201 set the wait themselves: long enough for a busy machine, shorter than the
# clients' 30 s timeout (the 202 fallback itself is tested with its own short wait).
SYNC_WAIT = {"FHIR_PATCH_SYNC_WAIT_SECONDS": "25"}


@dataclass
class Service:
    base: str
    env: dict[str, str]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    api: subprocess.Popen[bytes] | None = None
    log_dir: Path = Path(".")
    issuer: TokenIssuer | None = None

    @property
    def fhir(self) -> str:
        return f"{self.base}/fhir"

    def client(
        self,
        timeout: float = 30,
        scope: str = ADMIN_SCOPE,
        sub: str = "tester",
        token: str | None = None,
        **claims: str,
    ) -> httpx.Client:
        """An HTTP client of the FHIR base with a bearer token (by default one that may do everything)."""
        assert self.issuer is not None
        headers = {"authorization": f"Bearer {token or self.issuer.token(scope, sub, **claims)}"}
        return httpx.Client(base_url=self.fhir, timeout=timeout, trust_env=False, headers=headers)

    def ops(self, timeout: float = 30) -> httpx.Client:
        """An HTTP client of the service root (/metrics, /readyz) with a token that may read the metrics."""
        assert self.issuer is not None
        return httpx.Client(base_url=self.base, timeout=timeout, trust_env=False, headers=self.issuer.bearer())

    def anonymous(self, timeout: float = 30) -> httpx.Client:
        """An HTTP client of the service root with no token."""
        return httpx.Client(base_url=self.base, timeout=timeout, trust_env=False)

    def signal_worker(self, index: int, signum: int) -> None:
        """Signal a whole worker (main process and its pool children)."""
        os.killpg(self.workers[index].pid, signum)


@contextlib.contextmanager
def running_service(env: dict[str, str], tmp: Path, workers: int = 2, concurrency: int = 1) -> Iterator[Service]:
    port = free_port()
    issuer = TokenIssuer(tmp / "jwks.json")
    pool = {"FHIR_PATCH_WORKERS": str(workers), "FHIR_PATCH_WORKER_CONCURRENCY": str(concurrency)}
    full_env = {**FAST_RECOVERY, **SYNC_WAIT, **issuer.env(), **pool, **env, "FHIR_PATCH_HTTP_PORT": str(port)}
    service = Service(f"http://127.0.0.1:{port}", full_env, log_dir=tmp, issuer=issuer)
    with contextlib.ExitStack() as stack:
        for n in range(workers):
            service.workers.append(
                stack.enter_context(started(worker_argv(f"w{n}-{port}", concurrency), full_env, tmp / f"worker{n}.log"))
            )
        service.api = stack.enter_context(started(api_argv(port), full_env, tmp / "api.log"))
        wait_http_ok(f"{service.base}/readyz", timeout=60)
        yield service
        # The test is over and its database and namespace are its own: the workers (each a process group with its
        # pool) are killed, not shut down warm, which would wait for a drainer's turn of up to 5 s each.
        for proc in service.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def wait_jobs_final(client: httpx.Client, locations: list[str], timeout: float = 120) -> dict[str, httpx.Response]:
    """Poll every job until it is no longer 202; returns the last answer per location."""
    answers: dict[str, httpx.Response] = {}
    pending = list(locations)

    def poll() -> bool:
        nonlocal pending
        still = []
        for location in pending:
            response = client.get(location)
            if response.status_code == 202:
                still.append(location)
            else:
                answers[location] = response
        pending = still
        return not pending

    wait_for(poll, timeout, f"{len(pending)} jobs to finish", interval=0.2)
    return answers


@contextlib.contextmanager
def service_of_its_own(
    service_env: dict[str, str], tmp: Path, settings: dict[str, str], workers: int = 1
) -> Iterator[Service]:
    """A running service with its own database and Redis key prefix, and these settings on top."""
    token = uuid.uuid4().hex[:10]
    env = {**service_env, "FHIR_PATCH_DATABASE": f"s_{token}", "FHIR_PATCH_NAMESPACE": f"s-{token}", **settings}
    with running_service(env, tmp, workers=workers) as running:
        yield running
