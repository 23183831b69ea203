"""How much the outbox cut costs over the least work any forwarder must do.

Fills pending_counts with N distinct keys, then times (a) the baseline: read the rows and encode
them as one bulk JSON document, (b) the outbox cut: read, build items, chunk to 95 KiB, persist the
batches and delete the pending rows, in bounded transactions (synchronous=FULL), (c) encoding every
persisted batch into request bodies. Prints the ratios; no goal is asserted here.

    .venv/bin/python bench/forwarder_cut.py [N]
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from proxy.forwarding.delivery import new_batch_id
from proxy.storage import Store
from proxy.storage.outbox import Outbox
from proxy.unleash.store import pending
from proxy.unleash.upstream.payload import encode_body, make_chunker


def fill(store: Store, n: int, hour: int) -> None:
    db = store.db
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO pending_counts VALUES ('development', ?, ?, ?, ?, ?, NULL)",
        [(f"app-{i % 50}", f"feature.{i:07d}", hour, i % 9 + 1, i % 4) for i in range(n)],
    )
    db.execute("COMMIT")


def baseline(store: Store) -> int:
    rows = store.db.execute("SELECT app_name, feature_name, hour, yes, no FROM pending_counts").fetchall()
    return len(json.dumps({"applications": [], "metrics": [
        {"featureName": f, "appName": a, "environment": "development", "timestamp": h, "yes": y, "no": n}
        for a, f, h, y, n in rows
    ]}))


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.db", "FULL")
        await store.open()
        outbox = Outbox(store)
        hour = int(time.time() // 3600 * 3600)
        fill(store, n, hour)

        started = time.perf_counter()
        size = baseline(store)
        base = time.perf_counter() - started

        started = time.perf_counter()
        chunker, batches, more, longest = make_chunker("development", 95 * 1024), 0, True, 0.0
        while more:
            step = time.perf_counter()
            made, more = store.write(pending.cut, "development", time.time(), chunker, new_batch_id)
            batches += made
            longest = max(longest, time.perf_counter() - step)
        cut = time.perf_counter() - started

        started = time.perf_counter()
        bodies = [encode_body(b.items) for b in outbox.oldest_batches("development", set(), batches)]
        encode = time.perf_counter() - started
        await store.close()

    print(f"{n} keys, {size / 1024:.0f} KiB as one document, {batches} batches of <= 95 KiB "
          f"(largest {max(map(len, bodies)) / 1024:.1f} KiB)")
    print(f"baseline read+encode   {base * 1000:8.1f} ms  1.00x")
    print(f"outbox cut (persisted) {cut * 1000:8.1f} ms  {cut / base:.2f}x")
    print(f"longest single cut     {longest * 1000:8.1f} ms  (the event loop's longest wait)")
    print(f"encode stored batches  {encode * 1000:8.1f} ms  {encode / base:.2f}x")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000))
