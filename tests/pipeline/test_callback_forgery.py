"""Server-side request forgery through callbacks: every bypass form against real loopback listeners.

One listener stands where the allow-list points (paths under /hooks/ only), one where it does not. Each form
is sent as a real PATCH with X-Callback-URL; the count that matters is requests that arrived where the
allow-list does not name (must be 0)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.processes import wait_for
from tests.support.service import Service, running_service

FORMS = yaml.safe_load((Path(__file__).parent.parent / "auth" / "data" / "callback_urls.yaml").read_text())
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Listener:
    def __init__(self) -> None:
        self.arrivals: list[str] = []
        arrivals, forbidden = self.arrivals, self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers.get("content-length") or 0))
                arrivals.append(self.path)
                if self.path.startswith("/hooks/redirect"):  # an allowed receiver that tries to bounce the result away
                    self.send_response(307)
                    self.send_header("location", f"http://127.0.0.1:{forbidden.redirect_port}/stolen")
                else:
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.redirect_port = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def listeners() -> Iterator[tuple[Listener, Listener]]:
    allowed, forbidden = Listener(), Listener()
    allowed.redirect_port = forbidden.port
    yield allowed, forbidden
    allowed.close()
    forbidden.close()


def test_no_callback_reaches_an_address_the_allow_list_does_not_name(
    isolated_env: dict[str, str], tmp_path: Path, listeners: tuple[Listener, Listener]
) -> None:
    allowed, forbidden = listeners
    ports = {"allowed": allowed.port, "forbidden": forbidden.port}
    env = {
        **isolated_env,
        "FHIR_PATCH_CALLBACK_SECRET": SECRET,
        "FHIR_PATCH_CALLBACK_GIVE_UP_SECONDS": "3",
        "FHIR_PATCH_CALLBACK_ALLOW": ",".join(a.format(**ports) for a in FORMS["allow"]),
    }
    forms = [{**f, "url": f["url"].format(**ports)} for f in FORMS["forms"]]
    forms.append({"url": f"http://127.0.0.1:{allowed.port}/hooks/redirect", "refused": False})
    with running_service(env, tmp_path, workers=1) as service:
        tried, refused_at_intake, accepted = _send_forms(service, forms)
        wait_for(
            lambda: len([p for p in allowed.arrivals if p.startswith("/hooks/")]) >= accepted,
            60,
            f"{accepted} allowed callbacks delivered",
        )
        _wait_callbacks_ended(service)
    strays = forbidden.arrivals + [p for p in allowed.arrivals if not p.startswith("/hooks/")]
    report = {
        "forms_tried": tried,
        "refused_at_intake": refused_at_intake,
        "accepted": accepted,
        "arrived_where_forbidden": len(strays),
    }
    print(json.dumps(report))
    assert refused_at_intake == sum(1 for f in forms if f["refused"])
    assert strays == [], f"requests arrived where the allow-list does not point: {strays}"


def _send_forms(service: Service, forms: list[dict[str, Any]]) -> tuple[int, int, int]:
    refused_at_intake = accepted = 0
    with service.client() as client:
        assert client.put("Patient/ssrf", json={"resourceType": "Patient", "id": "ssrf"}).status_code in (201, 202)
        for form in forms:
            answer = client.patch(
                "Patient/ssrf",
                content=b'[{"op":"replace","path":"/active","value":true}]',
                headers={
                    "content-type": "application/json-patch+json",
                    "prefer": "respond-async",
                    "x-callback-url": form["url"].encode(),
                },
            )
            if form["refused"]:
                assert answer.status_code == 400, f"{form['url']!r}: {answer.status_code}"
                issue = answer.json()["issue"][0]
                assert issue["expression"] == ["X-Callback-URL"] and form["reason"] in issue["diagnostics"], issue
                refused_at_intake += 1
            else:
                assert answer.status_code == 202, f"{form['url']!r}: {answer.text}"
                accepted += 1
    return len(forms), refused_at_intake, accepted


def _wait_callbacks_ended(service: Service) -> None:
    """The redirected callback is retried until it gives up (3 s): by then every attempt has been made."""
    log = service.log_dir
    wait_for(
        lambda: any("callback gave-up" in p.read_text() for p in log.glob("worker*.log")),
        60,
        "the redirected callback given up",
    )
