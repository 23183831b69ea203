"""Memory: the proxy's RSS with a large backlog, and while it drains, beside the same proxy idle
on an empty database (the baseline, same run).

Backlog and outage as in bench.drain (bench/backlog.py): 1,000,000 pending keys written through
the store API; the proxy starts on them with the upstream down, cuts them into batches, then the
upstream comes back and the backlog drains. VmRSS is read from /proc/<pid>/status after the cut
(during the outage) and every 20 ms during the drain; VmHWM is the process's peak over its whole
life, start-up and cut included. Goal (issue 7): <= 150 MB with 1,000,000 pending keys; the
forwarder must stream batches, not load the backlog. Quick: 100,000 keys.

    python -m bench.memory [--quick]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.backlog import fill_backlog, outage_then_recovery, proc_memory
from bench.harness import cli
from bench.recorder import forwarding_proxy, recording_upstream

GOAL_BYTES = 150 * 10**6
MB = 10**6


def idle_baseline(upstream_url: str, data_dir: Path) -> dict[str, int]:
    with forwarding_proxy(upstream_url, data_dir, UPSTREAM_FLUSH_INTERVAL="10") as proxy:
        time.sleep(1.0)  # let the first tick (an empty cut) and the features poll run
        return proc_memory(proxy.pid)


def run(quick: bool = False) -> dict:
    keys = 100_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp, recording_upstream() as upstream:
        idle = idle_baseline(upstream.url, Path(tmp) / "empty")
        data = Path(tmp) / "backlog"
        total, fill_seconds = fill_backlog(data, keys)
        db_bytes = (data / "metrics-proxy.db").stat().st_size
        drained = outage_then_recovery(upstream, data, total, timeout=900)
    peak = max(drained["hwm_after_drain"], drained["rss_peak_during_drain"])
    return {
        "keys": keys, "total_counts": total, "fill_seconds": round(fill_seconds, 1), "database_bytes": db_bytes,
        "idle_rss": idle["VmRSS"], "idle_hwm": idle["VmHWM"], **drained,
        "peak_over_idle": round(peak / idle["VmHWM"], 2),
        "counts_exact": drained["delivered_counts"] == total,
        "goal_met": peak <= GOAL_BYTES,
    }


def report(r: dict) -> None:
    print(f"memory: {r['keys']:,} pending keys ({r['database_bytes'] / 2**20:.0f} MiB database), upstream down then up")
    print(f"  baseline: idle on an empty database   VmRSS {r['idle_rss'] / MB:6.1f} MB  VmHWM {r['idle_hwm'] / MB:6.1f} MB")
    print(f"  backlog, after start                  VmRSS {r['rss_at_start'] / MB:6.1f} MB")
    print(f"  backlog cut, upstream down            VmRSS {r['rss_during_outage'] / MB:6.1f} MB")
    print(f"  during the drain ({r['drain_seconds']:.1f} s, {r['drain_samples']} samples) peak VmRSS "
          f"{r['rss_peak_during_drain'] / MB:6.1f} MB")
    print(f"  after the drain                       VmRSS {r['rss_after_drain'] / MB:6.1f} MB  VmHWM "
          f"{r['hwm_after_drain'] / MB:6.1f} MB (lifetime peak)")
    print(f"  peak / idle peak {r['peak_over_idle']}x; goal <= {GOAL_BYTES // MB} MB: "
          f"{'met' if r['goal_met'] else 'NOT met'}; counts {'exact' if r['counts_exact'] else 'MISMATCH'}")
    assert r["counts_exact"], "every pending count must arrive exactly once"


def main() -> None:
    cli("memory", __doc__, run, report, "100,000 keys instead of 1,000,000")


if __name__ == "__main__":
    main()
