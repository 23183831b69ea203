"""LaunchDarkly SDK events: req/s and latency of durable POST /bulk beside the bare handler and the
Unleash ingest path (POST /api/client/metrics, 20 toggles), all measured in the same run.

Run: python -m bench.ld_events [--quick].
Load: wrk, 64 connections; each body a typical SDK flush: one summary of 20 flags plus 10 index
and custom events, cycling over 64 SDK instances (all of one environment's SDK key).

What the proxy does before its 202 that the bare handler does not: validate every event, turn the
summary into usage counts, journal the payload through the group commit (fsync). The events are
kept local (no events_url): this measures ingest, not sending.

Goals (issue 19): the /bulk ratio to the bare handler at least the Unleash ingest path's ratio of
the same run, with one process and with `workers = 2` (a worker passes /bulk to the primary); p99
<= 20 ms at half the maximum load.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from bench.harness import cli, proxy_server, wrk
from bench.ingest import BARE_SERVER, HALF_LOAD_P99_MS, lua_script, proxy_with_workers, saturate

SDK_KEY = "sdk-0b3c5e7f-1111-4222-8333-944455556666"
ENVIRONMENTS = json.dumps({"production": {"sdk_key": SDK_KEY, "project": "default"}})
INSTANCES = 64


def flush_body(instance: int) -> str:
    end = int(time.time() * 1000)
    features = {f"flag-{f}": {"default": False, "contextKinds": ["user"], "counters": [
        {"value": True, "variation": 0, "version": 12, "count": 17},
        {"value": False, "variation": 1, "version": 12, "count": 4}]} for f in range(20)}
    events: list[dict] = [{"kind": "summary", "startDate": end - 5000, "endDate": end, "features": features}]
    for n in range(10):
        context = {"kind": "user", "key": f"user-{instance}-{n}", "name": "Bench User"}
        if n % 2:
            events.append({"kind": "custom", "key": "checkout", "creationDate": end, "context": context,
                           "metricValue": 12.5, "data": {"sku": f"sku-{n}"}})
        else:
            events.append({"kind": "index", "creationDate": end, "context": context})
    return json.dumps(events, separators=(",", ":"))


def paced(url: str, path: str, script_for, max_rps: float, seconds: int) -> dict:
    mean_ms = 64_000 / (max_rps / 2)
    script = script_for(mean_ms)
    wrk(url, path, script, 3)
    return wrk(url, path, script, seconds)


def run(quick: bool = False) -> dict:
    seconds = 5 if quick else 15
    results: dict = {"seconds_per_run": seconds, "connections": 64, "quick": quick, "cpus": os.cpu_count(),
                     "started": time.strftime("%Y-%m-%d %H:%M"), "load_average_at_start": round(os.getloadavg()[0], 1)}
    env = {"METRICS_PROXY_LAUNCHDARKLY_ENVIRONMENTS": ENVIRONMENTS}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bodies = [flush_body(i) for i in range(INSTANCES)]
        events_script = lua_script(folder, 0, token=SDK_KEY, bodies=bodies)

        def events_paced(mean_ms: float) -> Path:
            return lua_script(folder, 0, mean_ms, token=SDK_KEY, bodies=bodies)

        unleash_script = lua_script(folder, 20)
        results["bare"] = saturate(BARE_SERVER, events_script, seconds)
        with proxy_server(env) as url:
            wrk(url, "/bulk", events_script, 2)
            results["bulk"] = wrk(url, "/bulk", events_script, seconds)
            results["bulk_at_half_load"] = paced(url, "/bulk", events_paced, results["bulk"]["rps"], seconds)
            wrk(url, "/api/client/metrics", unleash_script, 2)
            results["unleash"] = wrk(url, "/api/client/metrics", unleash_script, seconds)
        with proxy_with_workers(2, extra_env=env) as url:
            wrk(url, "/bulk", events_script, 2)
            results["bulk_workers_2"] = wrk(url, "/bulk", events_script, seconds)
            results["bulk_workers_2_at_half_load"] = paced(url, "/bulk", events_paced,
                                                           results["bulk_workers_2"]["rps"], seconds)
            wrk(url, "/api/client/metrics", unleash_script, 2)
            results["unleash_workers_2"] = wrk(url, "/api/client/metrics", unleash_script, seconds)
    bare = results["bare"]["rps"]
    for name in ("bulk", "unleash", "bulk_workers_2", "unleash_workers_2"):
        results[f"{name}_ratio_vs_bare"] = round(results[name]["rps"] / bare, 3)
    results["goals"] = {
        "ratio_workers_1": results["bulk_ratio_vs_bare"] >= results["unleash_ratio_vs_bare"],
        "ratio_workers_2": results["bulk_workers_2_ratio_vs_bare"] >= results["unleash_workers_2_ratio_vs_bare"],
        "p99_at_half_load": max(results["bulk_at_half_load"]["p99_ms"],
                                results["bulk_workers_2_at_half_load"]["p99_ms"]) <= HALF_LOAD_P99_MS,
    }
    results["finished"] = time.strftime("%Y-%m-%d %H:%M")
    results["load_average_at_end"] = round(os.getloadavg()[0], 1)
    return results


def report(results: dict) -> None:
    print(f"LaunchDarkly events: POST /bulk (1 summary of 20 flags + 10 index/custom events), 64 connections, "
          f"{results['seconds_per_run']} s per run")
    print(f"{'server':<34}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'/ bare':>8}")
    for name, label in (("bare", "bare handler (/bulk)"), ("bulk", "proxy /bulk, workers = 1"),
                        ("bulk_at_half_load", "  at half load"), ("unleash", "proxy Unleash ingest, workers = 1"),
                        ("bulk_workers_2", "proxy /bulk, workers = 2"), ("bulk_workers_2_at_half_load", "  at half load"),
                        ("unleash_workers_2", "proxy Unleash ingest, workers = 2")):
        r = results[name]
        print(f"{label:<34}{r['rps']:>9,.0f}{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}"
              f"{r['rps'] / results['bare']['rps']:>8.2f}")
        if r["non_2xx"]:
            print(f"  WARNING: {label}: {r['non_2xx']} non-2xx answers")
    print("goals:", ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in results["goals"].items()))


if __name__ == "__main__":
    cli("ld_events", __doc__, run, report, "5 s per run instead of 15 s")
