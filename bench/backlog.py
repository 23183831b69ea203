"""A backlog left by an upstream outage, and its drain after recovery: shared by bench.drain and
bench.memory.

The outage is filled fast and offline: `Store.append` + `Store.fold` (the ingest path minus HTTP)
write an hour of usage, 10,000 distinct keys per minute, into a database file, exactly as
acknowledged posts would have left it (journal folded into hourly, minute, pending counts). Then
a real proxy starts on that file with the recording upstream answering 503 (still down), cuts the
backlog into persisted batches and fails to send them; the upstream comes back (202) and the
clock runs until every count has arrived.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from bench.harness import settle_disk
from bench.recorder import Recorder, forwarding_proxy
from proxy.storage import CountRow, JournalEntry, Store

APPS = 100
KEYS_PER_MINUTE = 10_000
ROWS_PER_ENTRY = 1_000  # one journal entry per simulated bulk post


async def _fill(path: Path, keys: int, now: float) -> int:
    """Write `keys` distinct (app, flag) keys of the past hour; returns the yes + no total."""
    store = Store(path, synchronous="OFF")
    await store.open()
    hour = int(now // 3600 * 3600) - 3600
    minutes = max(1, keys // KEYS_PER_MINUTE)
    total = 0
    try:
        for minute in range(minutes):
            received = now - (minutes - minute) * 60
            first, last = minute * keys // minutes, (minute + 1) * keys // minutes
            entries = []
            for start in range(first, last, ROWS_PER_ENTRY):
                rows = [CountRow(f"app-{k % APPS:03d}", f"feature.flag-{k:07d}", hour, 1 + k % 7, k % 3)
                        for k in range(start, min(start + ROWS_PER_ENTRY, last))]
                total += sum(r.yes + r.no for r in rows)
                entries.append(JournalEntry("development", received, rows))
            await store.append(entries)
            store.fold()
    finally:
        await store.close()
    return total


def fill_backlog(data_dir: Path, keys: int) -> tuple[int, float]:
    """(yes + no total, seconds taken)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    total = asyncio.run(_fill(data_dir / "metrics-proxy.db", keys, time.time()))
    seconds = time.perf_counter() - started
    settle_disk()
    return total, seconds


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return values


class RssSampler(threading.Thread):
    """Highest VmRSS seen while running (every 20 ms)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.peak = max(self.peak, proc_memory(self.pid)["VmRSS"])
                self.samples += 1
            except (OSError, KeyError):
                return
            self._halt.wait(0.02)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak


def wait_until(condition, timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(step)


def outage_then_recovery(upstream: Recorder, data_dir: Path, total: int, timeout: float) -> dict:
    """Start the proxy on the backlog while the upstream answers 503; once it has cut the backlog
    and tried to send, bring the upstream back and time until every count has arrived."""
    upstream.answer(503)
    with forwarding_proxy(upstream.url, data_dir, UPSTREAM_FLUSH_INTERVAL="10", UPSTREAM_RETRY_MAX="2",
                          PRUNE_INTERVAL="3600") as proxy:
        started_rss = proc_memory(proxy.pid)
        # The first tick cuts every pending row before its first send: a refused send means the cut is done.
        wait_until(lambda: upstream.stats()["requests"] > 0, timeout, "the first (refused) send")
        cut = proxy.scrape()
        during_outage = proc_memory(proxy.pid)
        sampler = RssSampler(proxy.pid)
        sampler.start()
        upstream.answer(202)
        recovered = time.perf_counter()
        wait_until(lambda: upstream.stats()["yes"] + upstream.stats()["no"] >= total, timeout,
                   "every count to arrive", step=0.02)
        drain_seconds = time.perf_counter() - recovered
        drain_peak = sampler.stop()
        after = proc_memory(proxy.pid)
        left = proxy.scrape()
    received = upstream.stats()
    return {
        "drain_seconds": round(drain_seconds, 2),
        "upstream_requests": received["delivered_requests"], "upstream_bytes": received["delivered_bytes"],
        "refused_requests": received["requests"] - received["delivered_requests"],
        "delivered_counts": received["yes"] + received["no"], "metric_rows": received["metric_rows"],
        "pending_rows_after_cut": cut.get('metrics_proxy_outbox_pending_rows{environment="development"}', 0.0),
        "pending_rows_after_drain": left.get('metrics_proxy_outbox_pending_rows{environment="development"}', 0.0),
        "rss_at_start": started_rss["VmRSS"], "rss_during_outage": during_outage["VmRSS"],
        "rss_peak_during_drain": drain_peak, "drain_samples": sampler.samples,
        "rss_after_drain": after["VmRSS"], "hwm_after_drain": after["VmHWM"],
    }
