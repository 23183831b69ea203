"""Cost of the disk bound and of Idempotency-Keys on the ingest commit path, as ratios.

Drives Store.append (journal group commit + in-memory deltas, the part behind every 202) from 64
concurrent tasks, with: no size limit (the baseline, measured in the same run), the default
1 GiB limit (admission check per group commit, inline fold threshold), and the limit plus a
unique Idempotency-Key per request (bulk posts from a chained proxy). Prints medians of rounds.

    .venv/bin/python bench/size_limit_overhead.py [--requests 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from proxy.storage import Store
from proxy.storage.idempotency import IdempotencyClaim
from proxy.storage.journal import CountRow, JournalEntry

CONCURRENCY = 64
TOGGLES = 20
NOW = time.time()  # entries are received from now on, into the current hour
HOUR = int(NOW // 3600 * 3600)


def entry(n: int) -> list[JournalEntry]:
    rows = [CountRow(f"app-{n % 64}", f"flag-{j}", HOUR, 3, 1) for j in range(TOGGLES)]
    return [JournalEntry("development", NOW + n / 1000, rows)]


async def run(variant: str, requests: int, folder: Path) -> float:
    limit = None if variant == "no limit (baseline)" else 1024**3
    store = Store(folder / f"{variant[:8].strip()}.db", "NORMAL", max_db_size=limit)
    await store.open()
    keyed = variant.endswith("keys")
    try:
        next_n = iter(range(requests))

        async def worker() -> None:
            for n in next_n:
                claim = IdempotencyClaim("development", f"batch-{n}", NOW) if keyed else None
                await store.append(entry(n), claim)
                if n % 5000 == 0:
                    store.fold()  # the periodic fold, as the app runs it

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return requests / (time.perf_counter() - started)
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    variants = ["no limit (baseline)", "1 GiB limit", "1 GiB limit + keys"]
    results: dict[str, list[float]] = {v: [] for v in variants}
    for round_no in range(args.rounds):
        # Interleaved and rotated, so machine noise and warm-up hit every variant alike.
        for variant in variants[round_no % 3:] + variants[:round_no % 3]:
            with tempfile.TemporaryDirectory() as folder:
                results[variant].append(await run(variant, args.requests, Path(folder)))
    baseline = statistics.median(results[variants[0]])
    print(f"{'variant':<22} {'appends/s':>10} {'ratio':>6}")
    for variant in variants:
        rate = statistics.median(results[variant])
        print(f"{variant:<22} {rate:>10,.0f} {rate / baseline:>6.2f}")


if __name__ == "__main__":
    asyncio.run(main())
