"""Start-up: seconds from `metrics-proxy serve` to a healthy answer on a large database, beside the
same on an empty database (the baseline, same run). Goal (issue 7): <= 2 s on a 1 GiB database.

Run: python -m bench.startup [--quick]   (quick: 64 MiB instead of 1 GiB)
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import cli, free_port, settle_disk, wait_healthy
from proxy.storage.database import open_writer
from proxy.storage.migrations import migrate
from tests.support import this_hour

# The newest hour of the filled rows: the current one, so the 48 hours filled are all within the
# retention (rows dated long ago would be pruned right after the start being measured).
HOUR = this_hour()


def fill(path: Path, target_bytes: int) -> int:
    """Fill hourly, pending and minute tables with plausible rows until the file reaches target."""
    db = open_writer(path, "OFF")
    migrate(db)
    rng = random.Random(7)
    rows = 0
    while path.stat().st_size < target_bytes:
        batch = [("production", f"app-{rng.randrange(500)}", f"feature.flag-{rows + i}", HOUR - 3600 * (i % 48),
                  rng.randrange(1000), rng.randrange(1000), None) for i in range(100_000)]
        db.execute("BEGIN")
        db.executemany("INSERT OR IGNORE INTO hourly_counts VALUES (?,?,?,?,?,?,?)", batch)
        db.executemany("INSERT OR IGNORE INTO pending_counts VALUES (?,?,?,?,?,?,?)", batch)
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows += len(batch)
    db.close()
    return rows


def time_start(data_dir: Path) -> float:
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--auth", "open", "--port", str(port),
                             "--data-dir", str(data_dir), "--log-level", "WARNING"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=120)
        return time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(60)


def run(quick: bool = False) -> dict:
    size = (64 if quick else 1024) * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp:
        empty, large = Path(tmp) / "empty", Path(tmp) / "large"
        large.mkdir()
        rows = fill(large / "metrics-proxy.db", size)
        settle_disk()
        db_bytes = (large / "metrics-proxy.db").stat().st_size
        baseline = min(time_start(empty) for _ in range(3))
        measured = min(time_start(large) for _ in range(3))
    return {"database_bytes": db_bytes, "rows_per_table": rows, "empty_db_seconds": round(baseline, 3),
            "large_db_seconds": round(measured, 3), "ratio_vs_empty": round(measured / baseline, 2)}


def report(r: dict) -> None:
    print(f"start-up: empty database {r['empty_db_seconds']:.2f} s; {r['database_bytes'] / 2**20:,.0f} MiB database "
          f"{r['large_db_seconds']:.2f} s (ratio {r['ratio_vs_empty']:.2f}; goal <= 2 s)")


if __name__ == "__main__":
    cli("startup", __doc__, run, report, "a 64 MiB database instead of 1 GiB")
