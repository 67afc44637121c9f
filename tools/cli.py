"""The `fhir-patch` command: apply and diff patches locally, run the service."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from worker.settings import Settings, SettingsError


def _serve(args: argparse.Namespace) -> int:
    from tools.dev_auth import ensure_dev_key
    from tools.supervisor import service_processes, supervise

    settings = Settings.from_env()
    if not settings.auth_disabled and not settings.auth_jwks:  # secure by default: a local development key
        key = ensure_dev_key(Path(args.auth_dir))
        os.environ.update(key.environment())
        settings = Settings.from_env()
        print(
            f"Bearer tokens: signed by the development key in {key.directory}; get one with "
            f"`.venv/bin/fhir-patch token --scope 'system/*.cruds'`",
            flush=True,
        )
    print(f"API on http://{settings.http_host}:{settings.http_port}  (readiness: /readyz)", flush=True)
    specs = service_processes(settings, args.workers, args.concurrency, flower_port=args.flower_port)
    if args.flower_port:
        print(f"Flower on http://127.0.0.1:{args.flower_port}", flush=True)
    return supervise(specs, Path(args.log_dir))


def _submit(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tools.client import submit

    summary = submit(args.feed, args.server, args.idempotency_key, args.failures, Console(), args.token)
    return 0 if not summary.counts.get("failed") else 2


def _status(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tools.client import status

    return status(args.job, args.server, Console(), args.token)


def _token(args: argparse.Namespace) -> int:
    from tools.dev_auth import DevKey, dev_token, dpop_key

    try:
        bound_to = dpop_key(Path(args.dpop_key)).thumbprint() if args.dpop_key else None
        print(dev_token(DevKey(Path(args.auth_dir)), args.scope, args.sub, args.ttl, args.client_id, bound_to))
    except (FileNotFoundError, ValueError) as exc:
        print(f"fhir-patch: {exc}", file=sys.stderr)
        return 2
    return 0


def _dpop_proof(args: argparse.Namespace) -> int:
    from tools.dev_auth import dpop_key, dpop_proof

    try:
        print(dpop_proof(dpop_key(Path(args.key)), args.method, args.url, args.token))
    except (FileNotFoundError, ValueError) as exc:
        print(f"fhir-patch: {exc}", file=sys.stderr)
        return 2
    return 0


def _read(path: str) -> bytes:
    return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()


def _detect(body: bytes, name: str) -> str:
    """The patch media type of a file: by its extension, else by its content."""
    from worker.patch.interaction import FHIR_JSON, FHIR_XML, JSON_PATCH, XML_PATCH

    stripped = body.lstrip()
    if stripped.startswith(b"<"):
        return FHIR_XML if b"<Parameters" in stripped[:400] else XML_PATCH
    if stripped.startswith(b"["):
        return JSON_PATCH
    return FHIR_JSON


def _apply(args: argparse.Namespace) -> int:
    from worker.patch import PatchError, apply_patch
    from worker.patch.fhir_json import dumps, loads
    from worker.patch.fhir_xml import xml_bytes_to_resource

    try:
        raw = _read(args.resource)
        resource = xml_bytes_to_resource(raw) if raw.lstrip().startswith(b"<") else loads(raw, what="resource")
        body = _read(args.patch)
        outcome = apply_patch(resource, body, args.content_type or _detect(body, args.patch), strict=args.strict)
    except PatchError as exc:
        print(dumps(exc.outcome, indent=2))
        return 1
    if outcome.warnings:
        print(dumps(outcome.warnings, indent=2), file=sys.stderr)
    print(dumps(outcome.resource, indent=2))
    return 0


def _diff(args: argparse.Namespace) -> int:
    from worker.patch import PatchError, diff_resources
    from worker.patch.fhir_json import dumps, loads

    try:
        old, new = loads(_read(args.old), what="old resource"), loads(_read(args.new), what="new resource")
    except PatchError as exc:
        print(dumps(exc.outcome, indent=2))
        return 1
    print(dumps(diff_resources(old, new), indent=2))
    return 0


def _settings(_args: argparse.Namespace) -> int:
    for row in Settings.describe():
        print(f"{row['env']}={row['default']!r}\t{row['doc']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fhir-patch", description="Apply FHIR patches and run the fhir-patch-worker service."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_engine_commands, _service_commands, _client_commands):
        add(commands)
    settings = commands.add_parser("settings", help="list every setting with its default")
    settings.set_defaults(handler=_settings)
    return parser


def _engine_commands(commands: Any) -> None:
    apply = commands.add_parser(
        "apply",
        help="apply a patch file to a resource file; print the result (exit 1 with an OperationOutcome on failure)",
    )
    apply.add_argument("resource", help="FHIR resource (JSON or XML); - for standard input")
    apply.add_argument("patch", help="JSON Patch, XML Patch or FHIRPath Patch Parameters; - for standard input")
    apply.add_argument("--content-type", help="patch media type (detected from the file when not given)")
    apply.add_argument("--strict", action="store_true", help="refuse feed quirks instead of normalising them")
    apply.set_defaults(handler=_apply)
    diff = commands.add_parser("diff", help="print the FHIRPath Patch that turns OLD into NEW")
    diff.add_argument("old")
    diff.add_argument("new")
    diff.set_defaults(handler=_diff)


def _service_commands(commands: Any) -> None:
    auth_dir = "where the development signing key lives (default .run/auth)"
    serve = commands.add_parser("serve", help="run Celery worker(s) and the API until Ctrl-C")
    serve.add_argument("--workers", type=int, help="Celery worker processes (default: FHIR_PATCH_WORKERS, 1)")
    serve.add_argument(
        "--concurrency", type=int, help="pool size per worker (default: FHIR_PATCH_WORKER_CONCURRENCY, 2)"
    )
    serve.add_argument("--log-dir", default=".run/logs", help="where process logs go (default .run/logs)")
    serve.add_argument("--flower-port", type=int, default=0, help="also run Flower on 127.0.0.1:PORT (default: no)")
    serve.add_argument("--auth-dir", default=".run/auth", help=auth_dir)
    serve.set_defaults(handler=_serve)
    token = commands.add_parser("token", help="print a bearer token signed with the development key of `make run`")
    token.add_argument("--scope", default="system/*.cruds", help='SMART scopes, e.g. "system/*.cruds" (the default)')
    token.add_argument(
        "--sub", default="developer", help="the subject: it owns the jobs it submits (default developer)"
    )
    token.add_argument("--client-id", help="the client_id claim (default: the subject)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds the token is valid (default 3600)")
    token.add_argument("--auth-dir", default=".run/auth", help=auth_dir)
    token.add_argument(
        "--dpop-key", metavar="FILE", help="bind the token to the DPoP key in FILE, a private JWK (made when missing)"
    )
    token.set_defaults(handler=_token)
    proof = commands.add_parser("dpop-proof", help="print the DPoP proof of one request, signed with a DPoP key")
    proof.add_argument("--key", required=True, metavar="FILE", help="the DPoP key (as given to token --dpop-key)")
    proof.add_argument("--method", required=True, help="the request's method, e.g. PATCH")
    proof.add_argument("--url", required=True, help="the request's URL (any query is left out of htu)")
    proof.add_argument("--token", default=os.environ.get("FHIR_PATCH_TOKEN"), help="the access token (for ath)")
    proof.set_defaults(handler=_dpop_proof)


def _client_commands(commands: Any) -> None:
    bearer = {"default": os.environ.get("FHIR_PATCH_TOKEN"), "help": "bearer token (default $FHIR_PATCH_TOKEN)"}
    submit = commands.add_parser(
        "submit", help="send an NDJSON feed, follow it with a progress bar, write its failures"
    )
    submit.add_argument("feed", type=Path)
    submit.add_argument("--server", required=True, help="FHIR base URL, e.g. http://127.0.0.1:8080/fhir")
    submit.add_argument("--idempotency-key", help="resubmitting with the same key accepts each line only once")
    submit.add_argument("--failures", type=Path, help="where failed lines go (default FEED.failures.ndjson)")
    submit.add_argument("--token", **bearer)
    submit.set_defaults(handler=_submit)
    status = commands.add_parser("status", help="show a job or feed")
    status.add_argument("job")
    status.add_argument("--server", required=True, help="FHIR base URL")
    status.add_argument("--token", **bearer)
    status.set_defaults(handler=_status)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except SettingsError as exc:
        print(f"fhir-patch: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
