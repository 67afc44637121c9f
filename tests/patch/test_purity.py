"""worker.patch is a pure core: it imports nothing from Celery, pymongo, redis or FastAPI."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = ("celery", "kombu", "pymongo", "bson", "redis", "fastapi", "starlette", "uvicorn")


def test_engine_imports_no_infrastructure() -> None:
    for module in (Path(__file__).resolve().parents[2] / "worker" / "patch").glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{module.name} imports {name}"
