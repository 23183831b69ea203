"""Memory by cardinality: what one app reporting many distinct flags costs the proxy's memory.

A real `python -m proxy serve` (its defaults, `auth = "tokens"`), fed `--flags` distinct flags of
one app through the HTTP API: each of a few SDK instances registers, then they post metrics
buckets of `--per-post` flags each (every flag new), a few posts at a time. Then every read
endpoint is read once, and the Prometheus scrape, while `/internal-backstage/health` is polled
beside it. VmHWM (the process's peak) and VmRSS are read from /proc/<pid>/status after each step;
the baseline is the same process idle before the first post (same run). Goal (issue 17): 300,000
flags under 150 MiB VmHWM, and health's p99 low while the huge reads run.

    python -m bench.cardinality [--quick] [--flags N] [--per-post N]
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.backlog import proc_memory
from bench.harness import cli
from tests.support import ADMIN_TOKEN, CLIENT_TOKEN, ProxyProcess, iso

MIB = 2**20
GOAL_BYTES = 150 * MIB
APP = "cardinal-app"
INSTANCES = 4  # SDK instances of the app posting at once
HEALTH = "/internal-backstage/health"
READS = {
    "feature-toggles": "/api/client/metrics/feature-toggles",
    "seen-toggles": "/api/client/seen-toggles",
    "client applications": "/api/client/applications",
    "client application": f"/api/client/applications/{APP}",
    "seen-apps": "/api/client/seen-apps",
    "admin applications": "/api/admin/metrics/applications",
    "admin application": f"/api/admin/metrics/applications/{APP}",
    "application overview": f"/api/admin/metrics/applications/{APP}/overview",
    "instances": f"/api/admin/metrics/instances/{APP}/environment/development",
    "raw usage 48h": "/api/admin/client-metrics/features/flag-0000042/raw?hoursBack=48",
    "feature summary": "/api/admin/client-metrics/features/flag-0000042",
    "prometheus": "/internal-backstage/prometheus",
}


def register_body(instance: int, now: float) -> dict:
    return {"appName": APP, "instanceId": f"{APP}-{instance}", "sdkVersion": "unleash-node-sdk:6.12.1",
            "strategies": ["default", "flexibleRollout"], "started": iso(now - 60), "interval": 15000}


def metrics_body(instance: int, first: int, count: int, now: float) -> dict:
    return {"appName": APP, "instanceId": f"{APP}-{instance}",
            "bucket": {"start": iso(now - 15), "stop": iso(now),
                       "toggles": {f"flag-{n:07d}": {"yes": 1 + n % 5, "no": n % 3} for n in range(first, first + count)}}}


async def feed(url: str, flags: int, per_post: int) -> dict:
    """Registers, then the flags in posts of `per_post`, INSTANCES posts in flight at once."""
    headers = {"Authorization": CLIENT_TOKEN}
    now = time.time()
    starts = list(range(0, flags, per_post))
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    async with aiohttp.ClientSession(headers=headers) as session:
        for instance in range(INSTANCES):
            async with session.post(url + "/api/client/register", json=register_body(instance, now)) as r:
                statuses[r.status] = statuses.get(r.status, 0) + 1

        async def sender(instance: int) -> None:
            for first in starts[instance::INSTANCES]:
                body = metrics_body(instance, first, min(per_post, flags - first), time.time())
                async with session.post(url + "/api/client/metrics", json=body) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1

        await asyncio.gather(*(sender(i) for i in range(INSTANCES)))
    return {"posts": len(starts), "statuses": statuses, "feed_seconds": round(time.perf_counter() - started, 1)}


async def read_beside_health(url: str, path: str) -> dict:
    """One read (gzip accepted, as a browser or curl --compressed asks), with health polled beside it."""
    done = asyncio.Event()
    health_ms: list[float] = []
    async with aiohttp.ClientSession(auto_decompress=False) as session:

        async def poll() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                async with session.get(url + HEALTH) as r:
                    await r.read()
                health_ms.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(0.005)

        poller = asyncio.create_task(poll())
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        async with session.get(url + path, headers={"Authorization": ADMIN_TOKEN, "Accept-Encoding": "gzip"}) as r:
            body = await r.read()
            status = r.status
        read_ms = (time.perf_counter() - t0) * 1000
        done.set()
        await poller
    ordered = sorted(health_ms)
    return {"status": status, "read_ms": round(read_ms, 1), "wire_bytes": len(body),
            "health_samples": len(ordered), "health_p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
            "health_max_ms": round(ordered[-1], 1), "health_p50_ms": round(statistics.median(ordered), 2)}


def measure(flags: int, per_post: int = 1000, settings: dict[str, str] | None = None) -> dict:
    """The whole procedure on a proxy with `settings` (METRICS_PROXY_* variables) beside its defaults;
    tests/test_memory_by_cardinality.py runs it on a smaller scale."""
    with tempfile.TemporaryDirectory(prefix="bench-cardinality-") as tmp:
        data = Path(tmp) / "data"
        proxy = ProxyProcess(data, extra_env={"METRICS_PROXY_LOG_LEVEL": "WARNING", **(settings or {})}).start()
        pid = proxy.proc.pid
        try:
            time.sleep(1.0)
            idle = proc_memory(pid)
            fed = asyncio.run(feed(proxy.url, flags, per_post))
            after_feed = proc_memory(pid)
            reads = {}
            for name, path in READS.items():
                reads[name] = asyncio.run(read_beside_health(proxy.url, path))
                reads[name].update({f"after_{k}": v for k, v in proc_memory(pid).items()})
            final = proc_memory(pid)
            db_bytes = sum(f.stat().st_size for f in data.glob("metrics-proxy.db*"))
        finally:
            proxy.stop()
    return {
        "flags": flags, "per_post": per_post, "instances": INSTANCES, **fed, "database_bytes": db_bytes,
        "idle_hwm": idle["VmHWM"], "idle_rss": idle["VmRSS"],
        "after_feed_hwm": after_feed["VmHWM"], "after_feed_rss": after_feed["VmRSS"],
        "reads": reads, "final_hwm": final["VmHWM"], "final_rss": final["VmRSS"],
        "hwm_growth_per_flag": round((final["VmHWM"] - idle["VmHWM"]) / flags, 1),
        "goal_met": final["VmHWM"] < GOAL_BYTES,
    }


def run(quick: bool = False, flags: int | None = None, per_post: int = 1000) -> dict:
    return measure(flags or (50_000 if quick else 300_000), per_post)


def report(r: dict) -> None:
    print(f"cardinality: {r['flags']:,} distinct flags of one app, {r['posts']} posts of {r['per_post']:,} flags "
          f"from {r['instances']} instances in {r['feed_seconds']} s (statuses {r['statuses']}); "
          f"{r['database_bytes'] / MIB:.0f} MiB on disk")
    print(f"  baseline, idle               VmHWM {r['idle_hwm'] / MIB:6.1f} MiB  VmRSS {r['idle_rss'] / MIB:6.1f} MiB")
    print(f"  after the posts              VmHWM {r['after_feed_hwm'] / MIB:6.1f} MiB  VmRSS {r['after_feed_rss'] / MIB:6.1f} MiB")
    print(f"  {'after reading':<28} {'VmHWM':>11} {'VmRSS':>11} {'read ms':>9} {'wire bytes':>11} "
          f"{'health p50':>11} {'p99':>7} {'max ms':>7}")
    for name, f in r["reads"].items():
        print(f"  {name:<28} {f['after_VmHWM'] / MIB:7.1f} MiB {f['after_VmRSS'] / MIB:7.1f} MiB {f['read_ms']:9.1f} "
              f"{f['wire_bytes']:11,} {f['health_p50_ms']:11.2f} {f['health_p99_ms']:7.1f} {f['health_max_ms']:7.1f}"
              + ("" if f["status"] == 200 else f"  (status {f['status']})"))
    print(f"  final VmHWM {r['final_hwm'] / MIB:.1f} MiB ({r['final_hwm'] / r['idle_hwm']:.2f}x idle, "
          f"{r['hwm_growth_per_flag']:,} bytes per flag), VmRSS {r['final_rss'] / MIB:.1f} MiB; goal < "
          f"{GOAL_BYTES // MIB} MiB: {'met' if r['goal_met'] else 'NOT met'}")


def add_arguments(parser) -> None:
    parser.add_argument("--flags", type=int, default=None, help="distinct flags (default 300,000; --quick 50,000)")
    parser.add_argument("--per-post", type=int, default=1000, help="flags per metrics post (default 1,000)")


def main() -> None:
    cli("cardinality", __doc__, run, report, "50,000 flags instead of 300,000", add_arguments)


if __name__ == "__main__":
    main()
