"""Read-endpoint latency over a full store: 100 apps x 1,000 flags x 48 hours of hourly counts.

The store is filled through `Store.append` + `Store.fold` (the ingest path minus HTTP), then a real
`python -m proxy serve` answers on loopback. Each read endpoint's p50/p99 is printed beside the
p50/p99 of `/internal-backstage/health` measured in the same run; the goal is every read endpoint's
p99 under 10x the trivial endpoint's. `--quick` uses 10 apps x 100 flags.

Requests send `Accept-Encoding: gzip` and are not decompressed while timed (what an HTTP client
that accepts gzip receives); the table prints the answer's size and the bytes on the wire. Read
answers are cached until the data changes, so the warm figures are mostly cache hits: beside them
are the cold figures, each the first read after a one-count post changed the data (the SQL path,
encoding and compression included).

    python -m bench.reads [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.harness import settle_disk
from proxy.storage import CountRow, InstanceSeen, JournalEntry, Store
from tests.support import iso, this_hour

RESULTS = Path(__file__).parent / "results"
ADMIN_TOKEN = "*:*.bench-admin-secret"
CLIENT_TOKEN = "default:development.bench-client-secret"
COLD_SAMPLES = (5, 10)  # quick, full
# The post that makes every cached answer stale before a cold read: one count of a stored flag, in
# the current hour (a bucket dated long ago would be older than the 48 h retention).
CHANGE = {"appName": "app-007", "instanceId": "app-007-1",
          "bucket": {"start": iso(this_hour()), "stop": iso(this_hour() + 10),
                     "toggles": {"flag-0042": {"yes": 1, "no": 0}}}}
GOAL_RATIO = 10.0
HEALTH = "health (trivial)"
HOURS = 48
ENTRIES_PER_FOLD = 50


def sizes(quick: bool) -> tuple[int, int]:
    return (10, 100) if quick else (100, 1000)


async def fill(path: Path, apps: int, flags: int, now: float) -> None:
    """One journal entry per app and hour carrying every flag; folded every few entries so the
    in-memory deltas stay small."""
    store = Store(path, synchronous="OFF")
    await store.open()
    newest = int(now // 3600 * 3600)
    try:
        for hour_index in range(HOURS):
            hour = newest - hour_index * 3600
            for start in range(0, apps, ENTRIES_PER_FOLD):
                entries = [
                    JournalEntry(
                        "development", now - hour_index * 60,
                        [CountRow(f"app-{a:03d}", f"flag-{f:04d}", hour, 1 + f % 7, f % 3) for f in range(flags)],
                        [InstanceSeen(f"app-{a:03d}", f"app-{a:03d}-1", "unleash-node-sdk:6.12.1",
                                      ["default", "flexibleRollout"], 15.0)],
                    )
                    for a in range(start, min(start + ENTRIES_PER_FOLD, apps))
                ]
                await store.append(entries)
                store.fold()
    finally:
        await store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_proxy(data_dir: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, METRICS_PROXY_ADMIN_TOKENS=ADMIN_TOKEN, METRICS_PROXY_CLIENT_TOKENS=CLIENT_TOKEN,
               METRICS_PROXY_LOG_LEVEL="WARNING", METRICS_PROXY_MAX_DB_SIZE=str(8 * 1024**3),
               METRICS_PROXY_PRUNE_INTERVAL="3600")
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--data-dir", str(data_dir)], env=env
    )
    return proc


async def wait_healthy(session: aiohttp.ClientSession, base: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited with {proc.returncode}")
        try:
            async with session.get(base + "/internal-backstage/health") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("proxy did not become healthy")


def endpoints() -> dict[str, str]:
    return {
        HEALTH: "/internal-backstage/health",
        "feature-toggles": "/api/client/metrics/feature-toggles",
        "seen-toggles": "/api/client/seen-toggles",
        "client applications": "/api/client/applications?strategyName=flexibleRollout",
        "client application": "/api/client/applications/app-007",
        "seen-apps": "/api/client/seen-apps",
        "admin applications": "/api/admin/metrics/applications?limit=50&sortBy=updatedAt&sortOrder=desc",
        "admin application": "/api/admin/metrics/applications/app-007",
        "application overview": "/api/admin/metrics/applications/app-007/overview",
        "instances": "/api/admin/metrics/instances/app-007/environment/development",
        "raw usage 48h": "/api/admin/client-metrics/features/flag-0042/raw?hoursBack=48",
        "feature summary": "/api/admin/client-metrics/features/flag-0042",
    }


async def change_data(session: aiohttp.ClientSession, base: str) -> None:
    async with session.post(base + "/api/client/metrics", json=CHANGE,
                            headers={"Authorization": CLIENT_TOKEN}) as response:
        assert response.status == 202, (response.status, await response.text())


async def timed_get(session: aiohttp.ClientSession, url: str) -> tuple[float, bytes, str | None]:
    headers = {"Authorization": ADMIN_TOKEN, "Accept-Encoding": "gzip"}
    t0 = time.perf_counter()
    async with session.get(url, headers=headers) as response:
        body = await response.read()
        assert response.status == 200, (url, response.status, body[:200])
    return (time.perf_counter() - t0) * 1000, body, response.headers.get("Content-Encoding")


def percentile(timings: list[float], share: float) -> float:
    ordered = sorted(timings)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


async def measure_cold(session: aiohttp.ClientSession, url: str, samples: int) -> list[float]:
    """`samples` reads of one endpoint, each right after a post changed the data (the SQL path)."""
    base = url.split("/", 3)
    cold: list[float] = []
    for _ in range(samples):
        await change_data(session, "/".join(base[:3]))
        elapsed, _, _ = await timed_get(session, url)
        cold.append(elapsed)
    return cold


async def measure_warm(session: aiohttp.ClientSession, urls: dict[str, str], rounds: int,
                       budget: float) -> dict[str, tuple[list[float], bytes, str | None]]:
    """Repeated reads, interleaved: each round reads every endpoint once, in a shuffled order, so
    a stall of the (shared) machine falls on health and the read endpoints alike and the ratio
    compares them under the same conditions. Stops after `rounds` or `budget` seconds (>= 20)."""
    for url in urls.values():  # warm-ups: the cache fills
        for _ in range(3):
            await timed_get(session, url)
    timings: dict[str, list[float]] = {name: [] for name in urls}
    last: dict[str, tuple[bytes, str | None]] = {}
    order = list(urls)
    shuffle = random.Random(42).shuffle
    started = time.perf_counter()
    done = 0
    while done < rounds and (done < 20 or time.perf_counter() - started < budget):
        shuffle(order)
        for name in order:
            elapsed, body, encoding = await timed_get(session, urls[name])
            timings[name].append(elapsed)
            last[name] = (body, encoding)
        done += 1
    return {name: (timings[name], *last[name]) for name in urls}


def figures(warm: list[float], cold: list[float], body: bytes, encoding: str | None) -> dict[str, float]:
    raw = gzip.decompress(body) if encoding == "gzip" else body
    return {
        "samples": len(warm),
        "p50_ms": statistics.median(warm),
        "p99_ms": percentile(warm, 0.99),
        "cold_samples": len(cold),
        "cold_p50_ms": statistics.median(cold),
        "cold_max_ms": max(cold),
        "bytes": len(raw),
        "wire_bytes": len(body),
        "content_encoding": encoding or "identity",
    }


async def run_async(quick: bool) -> dict:
    apps, flags = sizes(quick)
    rounds, budget = (300, 10.0) if quick else (1000, 60.0)
    cold_samples = COLD_SAMPLES[0 if quick else 1]
    with tempfile.TemporaryDirectory(prefix="bench-reads-") as tmp:
        data_dir = Path(tmp)
        now = time.time()
        started = time.perf_counter()
        await fill(data_dir / "metrics-proxy.db", apps, flags, now)
        fill_seconds = time.perf_counter() - started
        settle_disk()
        port = free_port()
        proc = start_proxy(data_dir, port)
        base = f"http://127.0.0.1:{port}"
        urls = {name: base + path for name, path in endpoints().items()}
        try:
            # auto_decompress=False: the timings and wire sizes are what a gzip-accepting client gets
            async with aiohttp.ClientSession(auto_decompress=False) as session:
                await wait_healthy(session, base, proc)
                cold = {name: await measure_cold(session, url, cold_samples) for name, url in urls.items()}
                warm = await measure_warm(session, urls, rounds, budget)
        finally:
            proc.terminate()
            proc.wait(30)
    results = {name: figures(warm[name][0], cold[name], warm[name][1], warm[name][2]) for name in urls}
    baseline = results[HEALTH]
    for f in results.values():
        f["p99_ratio"] = f["p99_ms"] / baseline["p99_ms"]
        f["cold_max_ratio"] = f["cold_max_ms"] / baseline["p99_ms"]
    return {
        "bench": "reads", "quick": quick, "apps": apps, "flags": flags, "hours": HOURS,
        "hourly_rows": apps * flags * HOURS, "fill_seconds": round(fill_seconds, 1),
        "goal": f"every read endpoint p99 < {GOAL_RATIO:g}x health p99 (warm, interleaved)", "endpoints": results,
        "goal_met": {name: f["p99_ratio"] < GOAL_RATIO for name, f in results.items()},
    }


def run(quick: bool) -> dict:
    results = asyncio.run(run_async(quick))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"reads-{'quick' if quick else 'full'}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    return results


def report(results: dict) -> None:
    print_table(results)


def print_table(report: dict) -> None:
    print(f"{report['apps']} apps x {report['flags']} flags x {report['hours']} h = "
          f"{report['hourly_rows']:,} hourly rows (filled in {report['fill_seconds']} s)")
    print(f"{'':<22} {'cold (first read after a change)':>34} | {'warm':>35} |")
    print(f"{'endpoint':<22} {'p50 ms':>9} {'max ms':>9} {'max/health':>14} | {'p50 ms':>9} {'p99 ms':>9} "
          f"{'p99/health':>15} | {'bytes':>10} {'wire bytes':>10}  goal <{GOAL_RATIO:g}x")
    for name, f in report["endpoints"].items():
        met = "yes" if report["goal_met"][name] else "NO"
        print(f"{name:<22} {f['cold_p50_ms']:>9.2f} {f['cold_max_ms']:>9.2f} {f['cold_max_ratio']:>13.1f}x | "
              f"{f['p50_ms']:>9.2f} {f['p99_ms']:>9.2f} {f['p99_ratio']:>14.1f}x | "
              f"{f['bytes']:>10} {f['wire_bytes']:>10}  {met}")
    print("ratios against health's p99; cold: n =", report["endpoints"][HEALTH]["cold_samples"],
          "reads, each after a post; warm:", report["endpoints"][HEALTH]["samples"],
          "rounds reading every endpoint once in a shuffled order (cache hits while the data and window hold)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 apps x 100 flags instead of 100 x 1,000")
    report(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
