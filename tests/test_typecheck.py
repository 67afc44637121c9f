"""The code stays `mypy --strict` and `ruff` clean (configuration in pyproject.toml), and formatted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_strict_is_clean() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_is_clean_and_the_code_formatted() -> None:
    """Lines up to 120, imports sorted, the complexity limit (C901 over 10), and `ruff format` leaves nothing to do."""
    paths = ["worker", "api", "tools", "tests", "bench", "scripts", "devkit"]
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", *paths], cwd=ROOT, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *paths], cwd=ROOT, capture_output=True, text=True
    )
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def test_no_test_imports_another_test_module_and_bench_never_imports_tests() -> None:
    """Shared helpers live in tests/support (tests only) or devkit/ (tests and benchmarks)."""
    import ast

    offenders = []
    for path in [*ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                in_bench = path.parent.name == "bench"
                if (in_bench and name.startswith("tests")) or (".test_" in f".{name}" or name.startswith("test_")):
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders
