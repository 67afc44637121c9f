"""The docs and the operator page in a real headless Chromium, against a real service, with a real token."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, Request, Route

from api.docs_pages import DOCS_POLICY
from api.ui.pages import CONTENT_SECURITY_POLICY
from tests.browser.conftest import OPERATOR_SCOPE, screenshot, sign_in
from tests.support.load import wait_group
from tests.support.service import Service

NDJSON = {"content-type": "application/fhir+ndjson"}


def _foreign(requests: list[Request], service: Service) -> list[str]:
    return [r.url for r in requests if not r.url.startswith(service.base) and not r.url.startswith(("data:", "blob:"))]


@pytest.mark.parametrize(("path", "operation"), [("/docs", ".opblock"), ("/redoc", "[data-section-id]")])
def test_docs_show_the_operations_with_nothing_from_another_origin(
    page: Page, ui_service: Service, path: str, operation: str
) -> None:
    fetched: list[Request] = []  # requests answered: ReDoc's logo from cdn.redoc.ly must be refused by the policy
    refused: list[str] = []
    page.on("requestfinished", lambda request: fetched.append(request))
    page.on("requestfailed", lambda request: refused.append(f"{request.url} {request.failure}"))
    answer = page.goto(ui_service.base + path)
    assert answer is not None and answer.headers["content-security-policy"] == DOCS_POLICY
    page.wait_for_selector(operation)
    shown = page.locator(operation).count()
    assert shown >= 15, f"{path} shows {shown} operations"
    assert "PATCH" in page.content().upper() and "/fhir/{resource_type}/{resource_id}" in page.content()
    assert _foreign(fetched, ui_service) == []
    assert all(r.endswith(" csp") for r in refused if not r.startswith(ui_service.base)), refused
    screenshot(page, path.strip("/"))


def test_swagger_ui_authorize_offers_bearer_and_dpop(page: Page, ui_service: Service) -> None:
    page.goto(ui_service.base + "/docs")
    page.click("button.authorize")
    page.wait_for_selector(".auth-container")
    schemes = page.locator(".auth-container h4").all_inner_texts()
    assert [s.split("\xa0")[0].strip() for s in schemes] == ["bearer", "dpopToken", "dpopProof"], schemes


def _feed(prefix: str) -> tuple[str, dict[int, str]]:
    """A feed with every kind of outcome; the failed lines -> what their row must say."""

    def patch(key: str, operations: list[dict[str, Any]]) -> str:
        data = base64.b64encode(json.dumps(operations).encode()).decode()
        binary = {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}
        return json.dumps({"request": {"method": "PATCH", "url": key}, "resource": binary})

    creates = [
        json.dumps(
            {
                "request": {"method": "PUT", "url": f"Organization/{prefix}{n}"},
                "resource": {"resourceType": "Organization", "id": f"{prefix}{n}", "name": f"org {n}"},
            }
        )
        for n in range(1, 5)
    ]
    lines = [
        *creates,  # 1-4 applied
        patch(f"Organization/{prefix}1", [{"op": "replace", "path": "/name", "value": "renamed"}]),  # 5 applied
        patch(f"Organization/{prefix}2", [{"op": "replace", "path": "/name", "value": "org 2"}]),  # 6 no-op
        "{not json",  # 7 refused at intake
        patch(f"Organization/{prefix}3", [{"op": "remove", "path": "/telecom/0"}]),  # 8 fails in the worker
        patch(f"Organization/{prefix}nobody", [{"op": "add", "path": "/active", "value": True}]),  # 9 fails too
    ]
    return "\n".join(lines) + "\n", {7: "400", 8: "4", 9: "404"}


def test_a_feed_with_failures_shows_its_counts_and_each_failed_line(page: Page, ui_service: Service) -> None:
    assert ui_service.issuer is not None
    token = ui_service.issuer.token(OPERATOR_SCOPE, "feed-operator")
    body, failed = _feed("uif")
    with httpx.Client(base_url=ui_service.fhir, headers={"authorization": f"Bearer {token}"}, timeout=30) as client:
        accepted = client.post("$bulk-submit", content=body.encode(), headers=NDJSON)
        assert accepted.status_code == 202
        group = accepted.headers["content-location"].rsplit("/", 1)[1]
        wait_group(client, accepted.headers["content-location"])
    sign_in(page, ui_service, token)
    row = page.locator(f"#groups tr[data-group='{group}']")
    row.wait_for()
    page.locator("#health .chart", has_text="now").first.wait_for()  # drawn from /metrics (system/metrics.read)
    assert "done" in row.inner_text() and "9 / 9" in row.inner_text()
    screenshot(page, "ui-feeds")
    page.click(f"#groups a[href='/ui/feeds/{group}']")
    page.wait_for_selector("#failed tr[data-line='9']")
    counts = {name: page.inner_text(f"[data-count={name}] b") for name in ("applied", "unchanged", "refused")}
    counts |= {name: page.inner_text(f"[data-count={name}] b") for name in ("failed", "cancelled")}
    assert counts == {"applied": "5", "unchanged": "1", "refused": "1", "failed": "2", "cancelled": "0"}
    rows = page.locator("#failed tbody tr")
    assert rows.count() == len(failed)
    for number, status in failed.items():
        cells = page.locator(f"#failed tr[data-line='{number}'] td").all_inner_texts()
        assert cells[2].startswith(status), cells
        assert cells[3], f"line {number} has no diagnostics: {cells}"
    assert "line 7" in page.inner_text("#failed tr[data-line='7']"), "the intake refusal names its line"
    assert page.locator("#failed tr[data-line='9'] td").nth(1).inner_text() == "Organization/uifnobody"
    with page.expect_download() as download:
        page.click("#download")
    lines = [json.loads(x) for x in Path(download.value.path()).read_text(encoding="utf-8").splitlines()]
    assert [x["line"] for x in lines] == list(range(1, 10)) and lines[5]["unchanged"] is True
    screenshot(page, "ui-feed")


def test_a_resource_timeline_shows_who_changed_what_and_the_diff(page: Page, ui_service: Service) -> None:
    assert ui_service.issuer is not None
    token = ui_service.issuer.token(OPERATOR_SCOPE, "timeline-operator")
    headers = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=ui_service.fhir, headers=headers, timeout=30) as client:
        org = {"resourceType": "Organization", "id": "uit1", "name": "Before", "active": True}
        assert client.put("Organization/uit1", json=org).status_code == 201
        patch = [{"op": "replace", "path": "/name", "value": "After"}, {"op": "add", "path": "/alias", "value": ["A"]}]
        answer = client.patch("Organization/uit1", json=patch, headers={"content-type": "application/json-patch+json"})
        assert answer.status_code == 200
    sign_in(page, ui_service, token)
    page.goto(f"{ui_service.base}/ui/resources/Organization/uit1")
    page.wait_for_selector("#diff .diff-op")
    timeline = page.locator("#timeline li").all_inner_texts()
    assert len(timeline) == 2 and timeline[0].startswith("version 2") and "timeline-operator" in timeline[0], timeline
    assert "changed alias, name" in timeline[0], timeline
    change = page.inner_text("#diff")
    assert (
        page.inner_text("#diff .op-replace del") == '"Before"' and page.inner_text("#diff .op-replace ins") == '"After"'
    )
    assert "/alias" in change
    screenshot(page, "ui-resource")


@pytest.fixture()
def other_origin() -> Iterator[tuple[str, list[str]]]:
    """A loopback server on another port, recording what it is asked for (it should be asked for nothing)."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802  (http.server's name)
            asked.append(self.path)
            self.send_response(200)
            self.send_header("content-type", "text/javascript")
            self.end_headers()
            self.wfile.write(b"window.foreignRan = true;")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()
    server.server_close()


def test_the_page_csp_refuses_a_script_from_another_origin(
    page: Page, ui_service: Service, other_origin: tuple[str, list[str]]
) -> None:
    origin, asked = other_origin
    answer = page.goto(f"{ui_service.base}/ui/")
    assert answer is not None and answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    violated = page.evaluate(
        """(src) => new Promise((resolve) => {
            document.addEventListener(
                "securitypolicyviolation", (e) => resolve(e.violatedDirective + " " + e.blockedURI));
            const script = document.createElement("script");
            script.src = src;
            document.head.append(script);
        })""",
        f"{origin}/evil.js",
    )
    assert violated.startswith("script-src") and origin in violated
    assert page.evaluate("window.foreignRan === undefined") and asked == []


def test_the_token_stays_in_session_storage_only(page: Page, ui_service: Service) -> None:
    assert ui_service.issuer is not None
    token = ui_service.issuer.token(OPERATOR_SCOPE, "storage-operator")
    sent: list[Request] = []
    page.on("request", lambda request: sent.append(request))
    sign_in(page, ui_service, token)
    assert page.evaluate("sessionStorage.getItem('fhir-patch.token')") == token
    assert page.context.cookies() == [] and page.evaluate("localStorage.length") == 0
    assert all(token not in r.url for r in sent)
    calls = [r for r in sent if "/fhir/" in r.url]
    assert calls and all(r.headers.get("authorization") == f"Bearer {token}" for r in calls)
    page.locator("#groups td", has_text="No feed or batch of yours yet.").wait_for()  # others' are not listed


def test_with_authentication_disabled_no_token_is_asked_for(page: Page, ui_service: Service) -> None:
    def disabled(route: Route) -> None:  # the script's side; the API's config answer is tested in process
        config = {"authDisabled": True, "communityParameter": None, "communities": [], "requiredHeaders": []}
        route.fulfill(json=config)

    page.route("**/ui/config.json", disabled)
    page.goto(f"{ui_service.base}/ui/")
    page.locator("#access-note", has_text="Authentication is disabled").wait_for()
    assert page.locator("#token-field").is_hidden()
    page.wait_for_selector("#groups")  # straight to the list, with no token pasted
