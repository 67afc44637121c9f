"""The `fhir-patch` command: apply and diff patches locally, run the service."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from worker.settings import Settings, SettingsError


def _serve(args: argparse.Namespace) -> int:
    from worker.supervisor import service_processes, supervise

    settings = Settings.from_env()
    print(f"API on http://{settings.http_host}:{settings.http_port}  (readiness: /readyz)", flush=True)
    return supervise(service_processes(settings, args.workers, args.concurrency), Path(args.log_dir))


def _settings(_args: argparse.Namespace) -> int:
    for row in Settings.describe():
        print(f"{row['env']}={row['default']!r}\t{row['doc']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fhir-patch", description="Apply FHIR patches and run the fhir-patch-worker service.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run Celery worker(s) and the API until Ctrl-C")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument("--concurrency", type=int, default=2, help="Celery pool size per worker (default 2)")
    serve.add_argument("--log-dir", default=".run/logs", help="where process logs go (default .run/logs)")
    serve.set_defaults(handler=_serve)
    settings = commands.add_parser("settings", help="list every setting with its default")
    settings.set_defaults(handler=_settings)
    return parser


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
