"""Scopes, the worker's policing of a job's actor, Provenance and callback targets: pure rules, no services."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from fhir.resources.R4B.provenance import Provenance

from worker.errors import Forbidden
from worker.model.access import Actor, Grants, Principal, Trace
from worker.model.callback_targets import CallbackRefused, checked_callback
from worker.model.changes import Existing, plan_change
from worker.model.jobs import Action, JobRequest
from worker.model.provenance import provenance_text
from worker.patch.fhir_json import dumps, loads

DATA = Path(__file__).parent / "data"
SCOPES = yaml.safe_load((DATA / "scopes.yaml").read_text())
CALLBACKS = yaml.safe_load((DATA / "callback_urls.yaml").read_text())


@pytest.mark.parametrize("row", SCOPES, ids=lambda r: f"{r['scope'] or '(none)'}->{r['type']}.{r['permission']}")
def test_scope_grants(row: dict[str, Any]) -> None:
    assert Grants.parse(row["scope"]).allows(row["type"], row["permission"]) is row["allowed"]


def test_service_scopes() -> None:
    assert Grants.parse("system/metrics.read").metrics
    assert not Grants.parse("system/*.cruds").metrics
    assert Grants.parse("system/*.cruds system/jobs.admin").jobs_admin
    assert not Grants.parse("system/jobs.admin").jobs_admin, "jobs.admin counts only with system/*.cruds"
    assert not Grants.parse("system/*.rs system/jobs.admin").jobs_admin


def test_forbidden_names_the_scope_that_would_allow_it() -> None:
    caller = Principal("s", "c", Grants.parse("system/Patient.rs"))
    with pytest.raises(Forbidden) as refused:
        caller.require("Organization", "u", where="Bundle.entry[2]")
    assert refused.value.status == 403
    assert refused.value.outcome["issue"][0]["code"] == "forbidden"
    assert "system/Organization.u" in refused.value.diagnostics
    assert refused.value.outcome["issue"][0]["expression"] == ["Bundle.entry[2]"]
    assert caller.owns("s") and not caller.owns("t")


PATIENT = {"resourceType": "Patient", "id": "p", "active": True, "gender": "male"}


def _put(rights: str, client: str = "c") -> JobRequest:
    body = dumps({**PATIENT, "gender": "female"}).encode()
    return JobRequest(Action.UPDATE, "Patient", "p", body, "application/fhir+json", actor=Actor("s", client, rights))


def test_a_put_that_creates_needs_c_and_one_that_updates_needs_u() -> None:
    with pytest.raises(Forbidden, match="system/Patient.c"):
        plan_change(_put("u"), None, {})
    assert plan_change(_put("c"), None, {}).status == 201
    with pytest.raises(Forbidden, match="system/Patient.u"):
        plan_change(_put("c"), Existing(1, dict(PATIENT)), {})
    assert plan_change(_put("u"), Existing(1, dict(PATIENT)), {}).status == 200
    assert plan_change(_put("c"), Existing(2, None), {}).status == 201, "over a deletion a PUT creates"


def test_a_client_policy_narrows_the_global_one() -> None:
    clients = {"registry": {"Patient": ("active",)}}
    patch = dumps([{"op": "replace", "path": "/gender", "value": "female"}]).encode()
    request = JobRequest(
        Action.PATCH, "Patient", "p", patch, "application/json-patch+json", actor=Actor("s", "registry")
    )
    with pytest.raises(Forbidden) as refused:
        plan_change(request, Existing(1, dict(PATIENT)), {}, clients)
    assert refused.value.outcome["issue"][0]["expression"] == ["Patient.gender"]
    other = JobRequest(
        Action.PATCH, "Patient", "p", patch, "application/json-patch+json", actor=Actor("s", "someone-else")
    )
    assert plan_change(other, Existing(1, dict(PATIENT)), {}, clients).resource["gender"] == "female"  # type: ignore[index]
    allowed = dumps([{"op": "replace", "path": "/active", "value": False}]).encode()
    ok = JobRequest(Action.PATCH, "Patient", "p", allowed, "application/json-patch+json", actor=Actor("s", "registry"))
    assert plan_change(ok, Existing(1, dict(PATIENT)), {}, clients).resource["active"] is False  # type: ignore[index]
    with pytest.raises(Forbidden):  # a PUT may not change more than a patch may
        plan_change(_put("cu", "registry"), Existing(1, dict(PATIENT)), {}, clients)


@pytest.mark.parametrize(
    ("action", "version", "deleted", "code"),
    [
        (Action.PATCH, 3, False, "PATCH"),
        (Action.CREATE, 1, False, "CREATE"),
        (Action.UPDATE, 1, False, "CREATE"),
        (Action.UPDATE, 2, False, "UPDATE"),
        (Action.DELETE, 4, True, "DELETE"),
    ],
)
def test_provenance_is_a_valid_r4_resource(action: Action, version: int, deleted: bool, code: str) -> None:
    request = JobRequest(action, "Patient", "p", actor=Actor("alice", "registry-a", trace=Trace("req-42")))
    text = provenance_text(request, version, datetime(2026, 11, 30, 10, 0, tzinfo=UTC), deleted, "job-1")
    resource = loads(text.encode(), what="Provenance")
    Provenance.model_validate(resource)
    assert resource["target"] == [{"reference": f"Patient/p/_history/{version}"}]
    assert resource["activity"]["coding"][0]["code"] == code
    assert resource["recorded"] == "2026-11-30T10:00:00.000Z"
    identifiers = {a["who"]["identifier"]["value"] for a in resource["agent"]}
    assert identifiers == {"alice", "registry-a"}
    assert [e["what"]["identifier"]["value"] for e in resource["entity"]] == ["job-1", "req-42"]


def _form(url: str) -> str:
    return url.format(allowed=9931, forbidden=9932)


@pytest.mark.parametrize("form", CALLBACKS["forms"], ids=lambda f: _form(f["url"]))
def test_callback_allow_list_forms(form: dict[str, Any]) -> None:
    allow = tuple(_form(a) for a in CALLBACKS["allow"])
    if not form["refused"]:
        target = checked_callback(_form(form["url"]), allow)
        assert target.connect_url.startswith("http://127.0.0.1:9931/hooks/")
        return
    with pytest.raises(CallbackRefused, match=form["reason"]):
        checked_callback(_form(form["url"]), allow)


def test_host_names_pass_only_when_every_address_is_allowed() -> None:
    allow = ("https://hooks.example.org/fhir/", "http://127.0.0.1:*/")
    public = checked_callback("https://hooks.example.org/fhir/x", allow, resolve=lambda h, p: ["93.184.216.34"])
    assert public.connect_url == "https://93.184.216.34:443/fhir/x", "delivery connects to the address that was checked"
    assert (public.host_header, public.sni) == ("hooks.example.org", "hooks.example.org")
    for addresses in (
        ["93.184.216.34", "10.0.0.7"],
        ["169.254.169.254"],
        ["127.0.0.1", "::1"],
        ["192.168.1.1"],
        ["fd00:ec2::254"],
    ):
        with pytest.raises(CallbackRefused, match="address that no allow-list entry names"):
            checked_callback("https://hooks.example.org/fhir/x", allow, resolve=lambda h, p, a=addresses: a)
    any_port = checked_callback("http://127.0.0.1:5555/x", allow)
    assert any_port.connect_url == "http://127.0.0.1:5555/x"
    with pytest.raises(CallbackRefused, match="non-default port|no allow-list entry"):
        checked_callback("https://hooks.example.org:8443/fhir/x", allow, resolve=lambda h, p: ["93.184.216.34"])


@pytest.mark.parametrize(
    "entry", ["http://127.0.0.1:", "127.0.0.1", "http://host/x?y=1", "http://u@host/", "gopher://host/"]
)
def test_bad_allow_list_entries_are_refused_at_start(entry: str) -> None:
    from worker.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="FHIR_PATCH_CALLBACK_ALLOW"):
        Settings.from_env({"FHIR_PATCH_CALLBACK_ALLOW": entry})


def test_client_policies_are_read_from_the_environment() -> None:
    from worker.settings import Settings, SettingsError

    settings = Settings.from_env(
        {"FHIR_PATCH_CLIENT_ELEMENT_POLICIES": '{"labeller": {"DocumentReference": ["securityLabel"]}}'}
    )
    assert settings.client_element_policies == {"labeller": {"DocumentReference": ("securityLabel",)}}
    with pytest.raises(SettingsError, match="labeller"):
        Settings.from_env(
            {"FHIR_PATCH_CLIENT_ELEMENT_POLICIES": '{"labeller": {"DocumentReference": "securityLabel"}}'}
        )


def test_the_capability_statement_says_when_authentication_is_off() -> None:
    from api.capabilities import security

    assert "DISABLED" in security(True)["description"] and "service" not in security(True)
    assert security(False)["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
