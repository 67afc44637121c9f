"""A shared running service (2 worker processes + API) for the pipeline tests that do not kill anything: one per
test process (session-scoped), so its start is paid once, not once per module; each test uses its own ids."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.service import Service, running_service, service_of_its_own

CALLBACK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
POLICIES = {"DocumentReference": ["securityLabel", "content"]}
CLIENT_POLICIES = {"labeller": {"DocumentReference": ["securityLabel"]}}


@pytest.fixture(scope="session")
def service(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    settings = {
        "FHIR_PATCH_ELEMENT_POLICIES": json.dumps(POLICIES),
        "FHIR_PATCH_CLIENT_ELEMENT_POLICIES": json.dumps(CLIENT_POLICIES),
        "FHIR_PATCH_CALLBACK_SECRET": CALLBACK_SECRET,
        "FHIR_PATCH_CALLBACK_ALLOW": "http://127.0.0.1:*/",
        "FHIR_PATCH_CALLBACK_GIVE_UP_SECONDS": "20",
        "FHIR_PATCH_MAX_BODY_BYTES": "65536",
        "FHIR_PATCH_JOB_RETENTION_SECONDS": "6",
    }
    with service_of_its_own(service_env, tmp_path_factory.mktemp("service"), settings, workers=2) as running:
        yield running


@pytest.fixture()
def fresh_service(isolated_env: dict[str, str], tmp_path: Path) -> Iterator[Service]:
    """A service of its own (2 workers) for a test that kills or pauses processes."""
    with running_service(isolated_env, tmp_path, workers=2) as running:
        yield running
