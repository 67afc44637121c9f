"""What the API serves for the pages, in process (no connection is opened: these routes need none)."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from api.app import create_app
from api.docs_pages import DOCS_POLICY
from api.ui.pages import CONTENT_SECURITY_POLICY
from worker.settings import Settings

NHN_LIKE = {
    "FHIR_PATCH_AUTH_DISABLED": "true",
    "FHIR_PATCH_TENANTS": json.dumps({"2.16.578.1": "reg_a", "2.16.578.2": "reg_b"}),
    "FHIR_PATCH_REQUIRED_HEADERS": "nhn-source-system",
}


class _Client:
    """Requests to the app in process (httpx's ASGI transport: no lifespan, so no connection is opened)."""

    def __init__(self, env: dict[str, str]) -> None:
        self._app = create_app(Settings.from_env(env))

    def get(self, path: str) -> httpx.Response:
        async def get() -> httpx.Response:
            transport = httpx.ASGITransport(app=self._app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                return await client.get(path)

        return anyio.run(get)


def _client(env: dict[str, str]) -> _Client:
    return _Client(env)


def test_the_page_config_says_how_to_call_the_api_and_holds_no_data() -> None:
    answer = _client(NHN_LIKE).get("/ui/config.json")
    assert answer.status_code == 200
    assert answer.json() == {
        "authDisabled": True,
        "communityParameter": "homeCommunityId",
        "communities": ["2.16.578.1", "2.16.578.2"],
        "requiredHeaders": ["nhn-source-system"],
    }


@pytest.mark.parametrize("path", ["/ui/", "/ui/feeds/g1", "/ui/resources/Organization/x", "/ui/static/app.js"])
def test_every_page_answer_carries_the_strict_policy(path: str) -> None:
    answer = _client({"FHIR_PATCH_AUTH_DISABLED": "true"}).get(path)
    assert answer.status_code == 200
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_an_unknown_page_file_is_404_with_an_outcome_naming_it() -> None:
    client = _client({"FHIR_PATCH_AUTH_DISABLED": "true"})
    answer = client.get("/ui/static/pages.py")
    assert answer.status_code == 404
    issue = answer.json()["issue"][0]
    assert "pages.py" in issue["diagnostics"] and issue["expression"] == ["name"]
    climbing = client.get("/ui/static/..%2Fpages.py")  # no path from the request reaches the file system
    assert climbing.status_code == 404 and climbing.json()["resourceType"] == "OperationOutcome"


def test_the_page_has_no_inline_script_and_loads_only_its_own_files() -> None:
    html = _client({"FHIR_PATCH_AUTH_DISABLED": "true"}).get("/ui/").text
    assert "<script>" not in html and "style=" not in html and "http" not in html.split("<body>")[0]


def test_docs_pages_load_their_assets_from_the_service() -> None:
    client = _client({"FHIR_PATCH_AUTH_DISABLED": "true"})
    for path in ("/docs", "/redoc"):
        answer = client.get(path)
        assert answer.headers["content-security-policy"] == DOCS_POLICY
        assert "cdn." not in answer.text and "/docs/static/" in answer.text
    assert client.get("/docs/static/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs/static/redoc.standalone.js").status_code == 200


def test_the_openapi_document_describes_bodies_security_and_the_community() -> None:
    document = _client(NHN_LIKE).get("/openapi.json").json()
    assert set(document["components"]["securitySchemes"]) == {"bearer", "dpopToken", "dpopProof"}
    patch = document["paths"]["/fhir/{resource_type}/{resource_id}"]["patch"]
    assert set(patch["requestBody"]["content"]) == {
        "application/json-patch+json",
        "application/xml-patch+xml",
        "application/fhir+json",
        "application/fhir+xml",
    }
    assert patch["security"] == [{"bearer": []}, {"dpopToken": [], "dpopProof": []}]
    assert "application/fhir+json" in patch["responses"]["4XX"]["content"]
    names = [p["name"] for p in patch["parameters"]]
    assert {"homeCommunityId", "Prefer", "If-Match", "Idempotency-Key"} <= set(names)
    assert "security" not in document["paths"]["/fhir/metadata"]["get"]
    assert "homeCommunityId" not in [
        p["name"] for p in document["paths"]["/fhir/metadata"]["get"].get("parameters", [])
    ]
    assert "application/fhir+ndjson" in document["paths"]["/fhir/$bulk-submit"]["post"]["requestBody"]["content"]
    assert not any(path.startswith("/ui") or path.startswith("/docs") for path in document["paths"])
