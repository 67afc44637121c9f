"""Where the CPU goes under load: py-spy samples of the API and of every worker process while closed-loop
synchronous PATCHes run (threads holding the GIL only, so Python CPU, not waits), reduced to the top functions
(self time, and inclusive time of our own functions). Prints JSON. Needs py-spy (`pip install py-spy`), and
ptrace rights on the service's processes.

    .venv/bin/python bench/profile.py [--format json-patch] [--clients 8] [--seconds 15] [--top 15] [--respond-async]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cost import FHIR_JSON, FORMATS, ORGS, closed_loop, create, organization  # noqa: E402
from harness import running  # noqa: E402

from devkit.procfs import command_name, descendants  # noqa: E402

PY_SPY = str(Path(sys.executable).parent / "py-spy")
OURS = ("worker/", "api/")


def record(pid: int, seconds: float, out: Path, gil_only: bool) -> subprocess.Popen[bytes]:
    argv = [
        PY_SPY,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--rate",
        "200",
        "--format",
        "raw",
        "--output",
        str(out),
        "--nonblocking",
        *(["--gil"] if gil_only else []),
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize(raw: Path, top: int) -> dict[str, Any]:
    """Self time per function, and inclusive time per function of this project, as shares of all samples."""
    own: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f for f in stack.split(";") if f]
        if not frames or not count.isdigit():
            continue
        n = int(count)
        total += n
        own[_short(frames[-1])] += n
        by_package[_package(frames[-1])] += n
        for frame in {_short(f) for f in frames if any(marker in f for marker in OURS)}:
            inclusive[frame] += n
    share = lambda c: round(100 * c / max(1, total), 1)  # noqa: E731
    return {
        "samples": total,
        "self_percent": {k: share(v) for k, v in own.most_common(top)},
        "self_percent_by_package": {k: share(v) for k, v in by_package.most_common(top)},
        "ours_inclusive_percent": {k: share(v) for k, v in inclusive.most_common(top)},
    }


def _package(frame: str) -> str:
    """The top-level package (or stdlib module) a frame's file belongs to: where self time is spent."""
    where = frame.partition(" (")[2].split(":")[0]
    parts = Path(where).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    for marker in ("worker", "api"):
        if marker in parts:
            return marker
    return Path(where).stem or "?"


def _short(frame: str) -> str:
    """`function (path/to/module.py:line)` -> `function (module.py)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.split(':')[0]).name})" if where else name


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", default="json-patch", choices=list(FORMATS))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=1, help="Celery workers (the service default: 1)")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker (the default: 2)")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--respond-async", action="store_true", help="send `Prefer: respond-async` (every PATCH goes to a worker)"
    )
    parser.add_argument(
        "--creates",
        action="store_true",
        help="PUT new resources instead of patching (with --respond-async: a directory's first load)",
    )
    parser.add_argument(
        "--wall", action="store_true", help="sample every active thread, not only the one holding the GIL"
    )
    parser.add_argument("--keep", type=Path, help="copy the raw py-spy stacks (one file per role) to this folder")
    return parser.parse_args()


def _merged(tmp: Path, recorders: dict[int, str], top: int, keep: Path | None) -> dict[str, Any]:
    """The samples of every process of one role together, summarized per role (and kept raw when asked)."""
    merged: dict[str, list[Path]] = {}
    for pid, name in recorders.items():
        if (tmp / f"{pid}.txt").exists():
            merged.setdefault(name, []).append(tmp / f"{pid}.txt")
    report = {}
    for name, files in merged.items():
        combined = tmp / f"{name}.all"
        combined.write_text("\n".join(f.read_text() for f in files))
        report[name] = summarize(combined, top)
        if keep:
            keep.mkdir(parents=True, exist_ok=True)
            (keep / f"{name}.txt").write_text(combined.read_text())
    return report


def main() -> None:
    args = _arguments()
    content_type, body = FORMATS[args.format]
    report: dict[str, Any] = {"format": args.format, "clients": args.clients, "respond_async": args.respond_async}
    report["creates"] = args.creates
    headers = {"content-type": content_type, **({"prefer": "respond-async"} if args.respond_async else {})}
    with (
        tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp,
        running(args.workers, Path(tmp), args.concurrency) as (base, _),
    ):
        create(base)

        def send(http: Any, n: int) -> Any:
            if args.creates:
                fresh = {**organization(n), "id": f"new-{os.getpid()}-{n}-{threading.get_ident()}"}
                return http.put(
                    f"Organization/{fresh['id']}", json=fresh, headers={**headers, "content-type": FHIR_JSON}
                )
            return http.patch(f"Organization/c{n % ORGS}", content=body(n), headers=headers)

        closed_loop(base, 4, 2, send)  # warm-up
        pids = {pid: command_name(pid) for pid in descendants(os.getpid()) if command_name(pid) in ("api", "worker")}
        load = threading.Thread(target=closed_loop, args=(base, args.clients, args.seconds + 2, send))
        load.start()
        recorders = {
            pid: (name, record(pid, args.seconds, Path(tmp) / f"{pid}.txt", not args.wall))
            for pid, name in pids.items()
        }
        for _, proc in recorders.values():
            proc.wait()
        load.join()
        report |= _merged(Path(tmp), {pid: name for pid, (name, _) in recorders.items()}, args.top, args.keep)
    print(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
