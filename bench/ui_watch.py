"""What watching a feed in the operator page costs the service; prints JSON.

    python bench/ui_watch.py [--lines 20000] [--resources 2000] [--invalid 0.1] [--workers 2] [--screenshots DIR]

Starts its own services, the API and N workers (INFO logging, auth on), creates the resources, then sends the
same kind of feed twice (devkit/feeds.py: three patch formats, a share of invalid lines):
- `alone`: nobody watches;
- `watched`: Debian's Chromium, headless, has /ui/ open with the token pasted in; when the feed appears in the
  list, it stays on the list (and its health charts) for LIST_SECONDS, then opens /ui/feeds/{id} and watches
  it to its end (progress polled with backoff, failed lines).
It reports the service's CPU seconds (API, workers, Redis, the MongoDB-protocol server; not the browser) for
each, the page's requests by kind, and what those requests cost: each kind is replayed afterwards 200 times
against the finished feed and its CPU per request measured, so `page_share` (the page's requests times their
cost, over the watched feed's service CPU) does not drown in the run-to-run noise of the `alone`/`watched`
difference, which is reported as well.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cost import CpuMeter  # noqa: E402
from feed import create  # noqa: E402
from harness import AUTH, running  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402

from devkit.browser import CHROMIUM_FLAGS, chromium_path  # noqa: E402
from devkit.feeds import feed_lines  # noqa: E402

SERVICE = ("api", "worker", "redis", "ferretdb", "mongod")  # the browser and this process are not the service
REPLAYS = 200
LIST_SECONDS = 12


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--resources", type=int, default=2_000)
    parser.add_argument("--invalid", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--screenshots", type=Path, default=None, help="keep pictures of the pages here")
    return parser.parse_args()


def service_cpu(meter: CpuMeter) -> float:
    meter.stop()
    return round(sum(s for name, s in meter.by_name.items() if name in SERVICE), 2)


def send_feed(base: str, args: argparse.Namespace, answers: list[httpx.Response]) -> None:
    with httpx.Client(base_url=f"{base}/fhir", trust_env=False, timeout=600, headers=AUTH) as client:
        body = (f"{line}\n".encode() for line in feed_lines(args.lines, args.resources, args.invalid))
        answers.append(client.post("$bulk-submit", content=body, headers={"content-type": "application/fhir+ndjson"}))


def wait_feed(base: str, location: str) -> None:
    with httpx.Client(trust_env=False, timeout=60, headers=AUTH) as client:
        while client.get(location).status_code != 200:
            time.sleep(0.25)


def alone(base: str, args: argparse.Namespace) -> dict[str, Any]:
    meter, started, answers = CpuMeter(), time.perf_counter(), []
    send_feed(base, args, answers)
    wait_feed(base, answers[0].headers["content-location"])
    return {"seconds": round(time.perf_counter() - started, 1), "service_cpu_seconds": service_cpu(meter)}


def kind_of(url: str) -> str:
    parts = urlsplit(url)
    if parts.path == "/metrics":
        return "health (/metrics)"
    if parts.path == "/fhir/_async":
        return "list (/fhir/_async)"
    if parts.path.endswith("/results"):
        return "failed lines (results?outcome=failed)" if "outcome=failed" in parts.query else "results download"
    if parts.path.startswith("/fhir/_async/"):
        return "progress (/fhir/_async/{id})"
    return "page files"


def watched(base: str, args: argparse.Namespace, page: Page) -> dict[str, Any]:
    asked: Counter[str] = Counter()
    page.on("request", lambda request: asked.update([kind_of(request.url)]))
    page.goto(f"{base}/ui/")
    page.fill("#token", AUTH["authorization"].removeprefix("Bearer "))
    page.click("#access button[type=submit]")
    page.wait_for_selector("#groups")
    known = page.eval_on_selector_all("#groups tr[data-group]", "rows => rows.map(r => r.dataset.group)")
    asked.clear()
    meter, started, answers = CpuMeter(), time.perf_counter(), []
    sender = threading.Thread(target=send_feed, args=(base, args, answers))
    sender.start()
    new_rows = "".join(f":not([data-group='{g}'])" for g in known)
    link = page.locator(f"#groups tr[data-group]{new_rows} a").first
    link.wait_for(timeout=120_000)
    time.sleep(LIST_SECONDS)  # the operator looks at the list and the health charts first
    shot(page, args, "ui-feeds")
    link.click()
    page.wait_for_selector("[data-count=applied]")
    time.sleep(5)
    shot(page, args, "ui-feed-running")
    page.locator("#progress td", has_text="done").wait_for(timeout=0)  # no eval: the page's policy forbids it
    seconds = round(time.perf_counter() - started, 1)
    sender.join()
    cpu = service_cpu(meter)
    shot(page, args, "ui-feed")
    location = answers[0].headers["content-location"]
    return {"seconds": seconds, "service_cpu_seconds": cpu, "page_requests": dict(asked), "location": location}


def shot(page: Page, args: argparse.Namespace, name: str) -> None:
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.screenshots / f"{name}.png"))


def request_costs(base: str, location: str) -> dict[str, float]:
    """Service CPU milliseconds per request of each kind the page makes, replayed on the finished feed."""
    paths = {
        "progress (/fhir/_async/{id})": location,
        "list (/fhir/_async)": f"{base}/fhir/_async",
        "failed lines (results?outcome=failed)": f"{location}/results?outcome=failed&_count=100",
        "health (/metrics)": f"{base}/metrics",
    }
    idle = idle_cpu_per_second()
    costs = {"idle_service_cpu_per_second": round(idle, 4)}
    with httpx.Client(trust_env=False, timeout=60, headers=AUTH) as client:
        for kind, url in paths.items():
            meter, started = CpuMeter(), time.perf_counter()
            for _ in range(REPLAYS):
                client.get(url).raise_for_status()
            spent = service_cpu(meter) - idle * (time.perf_counter() - started)
            costs[kind] = round(max(0.0, spent) * 1000 / REPLAYS, 2)
    return costs


def idle_cpu_per_second(seconds: float = 10) -> float:
    """What the service spends with nobody asking (reconciler passes, heartbeats), after the feed's after-work
    (retirements) has settled: taken off each replay's CPU."""
    time.sleep(15)
    meter = CpuMeter()
    time.sleep(seconds)
    return service_cpu(meter) / seconds


def main() -> None:
    args = arguments()
    chromium = chromium_path()
    if not chromium:
        sys.exit("ui_watch: Chromium is missing; run scripts/ensure-chromium.sh")
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        running(args.workers, Path(tmp), log_level="INFO") as (base, _),
        sync_playwright() as playwright,
    ):
        create(base, args.resources)
        first = alone(base, args)
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        second = watched(base, args, page)
        browser.close()
        costs = request_costs(base, second.pop("location"))
    attributed = sum(n * costs.get(kind, 0.0) for kind, n in second["page_requests"].items() if kind in costs) / 1000
    report = {
        "lines": args.lines,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "alone": first,
        "watched": second,
        "cpu_ms_per_page_request": costs,
        "page_cpu_seconds": round(attributed, 3),
        "page_share": round(attributed / second["service_cpu_seconds"], 4),
        "watched_minus_alone_share": round(second["service_cpu_seconds"] / first["service_cpu_seconds"] - 1, 4),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
