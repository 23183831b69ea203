"""Latency of small requests while the largest allowed bodies land.

A real `python -m proxy serve` (default limits: max_body_size 1 MiB, so ~27,000 new flags per
post). Baseline, same run and same server: health checks and one-flag metrics posts timed for a few
seconds with nothing else going on. Then the same, while four largest bodies are posted one after
another and for four seconds after (the fold of their flags follows the posts). Goal (issue 17):
health and small posts p99 under 50 ms during the large posts; the ratio to the baseline's p99 is
printed beside it.

    python -m bench.large_posts [--quick]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from bench.harness import cli
from tests.large_posts import Timings, measure
from tests.support import ProxyProcess

GOAL_MS = 50.0
MAX_BODY = 1024 * 1024


def run(quick: bool = False) -> dict:
    posts = 2 if quick else 4
    with tempfile.TemporaryDirectory(prefix="bench-large-") as tmp:
        proxy = ProxyProcess(Path(tmp) / "data").start()
        try:
            quiet = asyncio.run(measure(proxy.url, MAX_BODY, big_posts=0, now=time.time(), settle=4.0))
            loaded = asyncio.run(measure(proxy.url, MAX_BODY, big_posts=posts, now=time.time(), settle=4.0))
        finally:
            proxy.stop()
    return {
        "big_posts": posts, "big_flags": loaded.big_flags, "big_statuses": loaded.big_statuses,
        **{f"{name}_{which}_p99_ms": round(Timings.p99(values), 1)
           for which, timings in (("baseline", quiet), ("loaded", loaded))
           for name, values in (("health", timings.health_ms), ("small_post", timings.small_post_ms))},
        **{f"{name}_loaded_max_ms": round(max(values), 1)
           for name, values in (("health", loaded.health_ms), ("small_post", loaded.small_post_ms))},
        "samples": len(loaded.health_ms) + len(loaded.small_post_ms),
    }


def report(r: dict) -> None:
    print(f"large posts: {r['big_posts']} bodies of ~1 MiB ({r['big_flags']:,} new flags in all), "
          f"statuses {r['big_statuses']}")
    for name in ("health", "small_post"):
        base, loaded = r[f"{name}_baseline_p99_ms"], r[f"{name}_loaded_p99_ms"]
        print(f"{name:<11} p99 {loaded:6.1f} ms (max {r[f'{name}_loaded_max_ms']:.1f}) while they land; "
              f"{base:.1f} ms without: {loaded / max(base, 0.01):.1f}x; goal < {GOAL_MS:.0f} ms: "
              f"{'met' if loaded < GOAL_MS else 'NOT met'}")


def main() -> None:
    cli("large_posts", __doc__, run, report, "two large posts instead of four")


if __name__ == "__main__":
    main()
