"""The tree keeps its shape: layers imported downward only, no import cycles, the API's narrow door into the
worker, and the size budget (modules under 400 lines, functions under 40; lines under 120 is ruff's)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("worker", "api", "tools", "devkit", "bench", "scripts", "tests")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 40

# Each of our modules sits on a layer; it may import its own layer and those below, never above.
# The most specific prefix wins.
LAYERS: dict[str, int] = {
    "worker.patch": 0,  # the pure engine
    "worker.errors": 1,
    "worker.model": 1,  # jobs, changes, versions, groups, the store Protocols, wake-ups, the caller
    "worker.settings": 1,
    "worker.access_settings": 1,  # the settings of who may ask (auth, DPoP, scope aliases, request headers)
    "worker.redis_settings": 1,  # Redis high availability: Sentinel, replicas an arrival waits for
    "worker.redis_clients": 2,  # every Redis client, from the URL or from the Sentinels
    "worker.environment": 1,  # typed readers of environment variables, for the settings
    "worker.logs": 1,
    "worker.edges": 2,  # foreign exceptions become ours
    "worker.storage": 3,  # MongoDB
    "worker.schedule": 3,  # the life of a resource key (Redis and memory), one owner
    "worker.ordering": 3,  # Redis: admission, copies, counters, metrics, wake-ups
    "worker.broker": 3,  # Celery's configuration (both the API's sender and the workers use it)
    "worker.submission": 4,  # the one way work enters
    "worker.service": 5,  # drain, apply, outcomes, transactions, reconciler, callbacks
    "worker.celery": 6,  # tasks, each process's runtime, the process
    "api": 7,
    "tools": 7,  # client tools: a client of the API, not part of the worker
    "devkit": 8,  # shared by tests and benchmarks
    "bench": 9,
    "scripts": 9,
    "tests": 9,
}
# What the API may take from the worker: the engine, the model, the errors, the settings and logs, and the
# submission path; never storage, ordering, the service or Celery directly.
API_MAY_IMPORT = (
    "worker.patch",
    "worker.errors",
    "worker.model",
    "worker.settings",
    "worker.logs",
    "worker.submission",
)


def _modules() -> Iterator[tuple[str, Path]]:
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            if ".venv" not in path.parts:
                parts = path.relative_to(ROOT).with_suffix("").parts
                yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(module: str, path: Path) -> set[tuple[str, ...]]:
    """Our modules that `module` imports, each as the names it could be, most specific first (`from a import b`
    is module a.b when there is one, else a). Imports under `if TYPE_CHECKING:` count: they are a dependency."""
    found: set[tuple[str, ...]] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {(alias.name,) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            found |= {(f"{base}.{alias.name}", base) for alias in node.names}
    return {names for names in found if names[0].split(".")[0] in SOURCES}


def _known(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _layer(module: str) -> int:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[prefix]


def _graph() -> dict[str, set[str]]:
    modules = dict(_modules())
    return {
        module: {k for names in _imports(module, path) if (k := _known(names[0], modules)) and k != module}
        for module, path in modules.items()
    }


def test_every_import_points_down_the_layers() -> None:
    upward = [
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(module)
    ]
    assert upward == []


def test_there_is_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target] if target in path else [module, target]
            if target not in state and (cycle := visit(target, [*path, target])):
                return cycle
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [module])
            assert cycle is None, " -> ".join(cycle or [])


def test_the_api_enters_the_worker_only_through_the_submission_path_the_model_and_the_errors() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if module == "api" or module.startswith("api.")
        for target in targets
        if target.startswith("worker") and not target.startswith(API_MAY_IMPORT)
    ]
    assert wrong == []


def test_the_engine_imports_nothing_else_of_ours() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if module.startswith("worker.patch")
        for target in targets
        if not target.startswith("worker.patch")
    ]
    assert wrong == []


def test_modules_and_functions_stay_within_the_size_budget() -> None:
    over = []
    for module, path in _modules():
        text = path.read_text()
        if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
            over.append(f"{module}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    over.append(f"{module}.{node.name}: {length} lines")
    assert over == []
