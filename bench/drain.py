"""Drain: seconds from the upstream's recovery until an hour-long backlog has been delivered.

The backlog (bench/backlog.py): 600,000 distinct keys (an hour of 10,000 keys per minute), written
fast through the store API; a real proxy starts on it while the recording upstream answers 503,
cuts it into persisted batches, and is refused; then the upstream answers 202 and we time until
every count has arrived. Baseline, same run: a plain aiohttp client posting the same number of
bodies of the same size to the same recorder, 4 at a time (the proxy's max_in_flight): the least
any forwarder could take to move those bytes. Goal (issue 7): <= 30 s. Quick: 60,000 keys.

    python -m bench.drain [--quick]
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from bench.backlog import fill_backlog, outage_then_recovery
from bench.harness import cli
from bench.recorder import UPSTREAM_TOKEN, recording_upstream
from tests.support import iso, this_hour

GOAL_SECONDS = 30.0
IN_FLIGHT = 4


def filler_body(size: int) -> bytes:
    """A valid bulk body of about `size` bytes whose counts are zero (they must not skew the tally)."""
    item = json.dumps({"featureName": "baseline.flag", "appName": "baseline", "environment": "development",
                       "timestamp": iso(this_hour(), ".000"), "yes": 0, "no": 0, "variants": {}})
    items = max(1, (size - 32) // (len(item) + 1))
    return ('{"applications":[],"metrics":[' + ",".join([item] * items) + "]}").encode()


async def plain_client(url: str, requests: int, size: int) -> float:
    body = filler_body(size)
    queue = list(range(requests))
    headers = {"Content-Type": "application/json", "Authorization": UPSTREAM_TOKEN}

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            queue.pop()
            async with session.post(url + "/api/client/metrics/bulk", data=body,
                                    headers={**headers, "Idempotency-Key": uuid.uuid4().hex}) as response:
                assert response.status == 202, response.status

    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(IN_FLIGHT)))
        return time.perf_counter() - started


def run(quick: bool = False) -> dict:
    keys = 60_000 if quick else 600_000
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp, recording_upstream() as upstream:
        data = Path(tmp) / "data"
        total, fill_seconds = fill_backlog(data, keys)
        drained = outage_then_recovery(upstream, data, total, timeout=600)
        upstream.answer(202)
        requests = drained["upstream_requests"]
        baseline = asyncio.run(plain_client(upstream.url, requests, drained["upstream_bytes"] // max(1, requests)))
    return {
        "keys": keys, "total_counts": total, "fill_seconds": round(fill_seconds, 1), **drained,
        "baseline_plain_client_seconds": round(baseline, 2),
        "ratio_vs_plain_client": round(drained["drain_seconds"] / baseline, 1),
        "counts_exact": drained["delivered_counts"] == total and drained["metric_rows"] == keys,
        "goal_met": drained["drain_seconds"] <= GOAL_SECONDS,
    }


def report(r: dict) -> None:
    print(f"drain: {r['keys']:,} pending keys ({r['total_counts']:,} counts; filled through the store API in "
          f"{r['fill_seconds']} s), upstream down at start, then up")
    print(f"  proxy: upstream up -> every count delivered   {r['drain_seconds']:8.2f} s  "
          f"({r['upstream_requests']} requests, {r['upstream_bytes'] / 2**20:.1f} MiB)")
    print(f"  baseline: plain client, same bodies, 4 at once {r['baseline_plain_client_seconds']:8.2f} s  "
          f"ratio {r['ratio_vs_plain_client']}x")
    print(f"  goal <= {GOAL_SECONDS:.0f} s: {'met' if r['goal_met'] else 'NOT met'}; counts "
          f"{'exact' if r['counts_exact'] else 'MISMATCH'}; pending rows after drain {r['pending_rows_after_drain']:.0f}")
    assert r["counts_exact"], "every pending count must arrive exactly once"


def main() -> None:
    cli("drain", __doc__, run, report, "60,000 keys instead of 600,000")


if __name__ == "__main__":
    main()
