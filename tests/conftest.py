"""Shared fixtures: the real services, settings pointing at them, real processes."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import provision_module
from worker.settings import Settings


@pytest.fixture(scope="session")
def service_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """URLs of the real Redis and MongoDB-protocol server.

    `make test` starts them and exports the URLs; a bare `pytest` starts its own
    through the same provisioning code, and stops them at the end of the session.
    """
    if os.environ.get("FHIR_PATCH_REDIS_URL") and os.environ.get("FHIR_PATCH_MONGODB_URI"):
        yield {
            "FHIR_PATCH_REDIS_URL": os.environ["FHIR_PATCH_REDIS_URL"],
            "FHIR_PATCH_MONGODB_URI": os.environ["FHIR_PATCH_MONGODB_URI"],
        }
        return
    provision = provision_module()
    with (
        tempfile.TemporaryDirectory(prefix="fhir-patch-", dir=provision.scratch_dir()) as state,
        provision.services(Path(state)) as env,
    ):
        yield env


@pytest.fixture()
def isolated_env(service_env: dict[str, str]) -> dict[str, str]:
    """Environment for one test's processes: its own database and Redis key prefix."""
    token = uuid.uuid4().hex[:12]
    return {**service_env, "FHIR_PATCH_DATABASE": f"t_{token}", "FHIR_PATCH_NAMESPACE": f"t-{token}"}


@pytest.fixture()
def isolated_settings(isolated_env: dict[str, str]) -> Settings:
    return Settings.from_env(isolated_env)
