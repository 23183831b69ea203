"""Memory is set by configuration, not by how many distinct flags SDKs report.

A real proxy process takes 50,000 distinct flags of one app over HTTP and then answers every read
endpoint and the scrape once (bench/cardinality.py's procedure); its peak (VmHWM) may grow over
the same process idle by what the configuration and the fixed bounds allow, and no more. Before
the read answers were bounded, those 50,000 flags took it up by ~55 MiB (~1,100 bytes per flag;
300,000 flags: 218 MiB), from answers listing every flag.
"""

from __future__ import annotations

from bench.cardinality import measure
from proxy.storage.database import PAGE_CACHE_KIB
from proxy.storage.writer import STAGE_AFTER_KEYS

FLAGS = 50_000
MAX_FLAGS = 500  # read_max_flags
SERIES = 500  # prometheus_max_usage_series
CACHE = 1024 * 1024  # read_cache_max_bytes
ANSWER_BYTES = 1024 * 1024  # read_max_answer_bytes
MIB = 2**20

# Generous costs of what each bound holds (measured: a held count key ~300 bytes; the largest
# answer, seen-apps, ~200 bytes per listed flag of one app; a rendered series ~180 bytes).
DELTA_KEY_BYTES = 600  # a count key in the writer's deltas, before the folder stages them
ANSWER_FLAG_BYTES = 2_000  # one listed flag, built, encoded and gzipped
SERIES_BYTES = 1_000  # one feature_toggle_usage_total series
CONNECTIONS = 3  # the writer, the reader, a shard reader at most
FIXED = 8 * MIB  # the interpreter and allocator between idle and busy: buffers, compiled queries, arenas


def allowance() -> dict[str, int]:
    return {
        "deltas before staging": STAGE_AFTER_KEYS * DELTA_KEY_BYTES,
        "one read answer": MAX_FLAGS * ANSWER_FLAG_BYTES + ANSWER_BYTES,
        "one scrape": SERIES * SERIES_BYTES,
        "read cache": CACHE,
        "SQLite page caches": CONNECTIONS * PAGE_CACHE_KIB * 1024,
        "fixed": FIXED,
    }


def test_peak_memory_does_not_grow_with_the_number_of_flags():
    result = measure(FLAGS, per_post=1000, settings={
        "METRICS_PROXY_READ_MAX_FLAGS": str(MAX_FLAGS),
        "METRICS_PROXY_PROMETHEUS_MAX_USAGE_SERIES": str(SERIES),
        "METRICS_PROXY_READ_CACHE_MAX_BYTES": str(CACHE),
        "METRICS_PROXY_READ_MAX_ANSWER_BYTES": str(ANSWER_BYTES),
    })
    assert result["statuses"] == {202: result["posts"] + 4}, result["statuses"]  # 4 registers
    assert all(read["status"] == 200 for read in result["reads"].values()), result["reads"]
    growth = result["final_hwm"] - result["idle_hwm"]
    parts = allowance()
    bound = sum(parts.values())
    assert growth < bound, (
        f"VmHWM grew {growth / MIB:.1f} MiB ({growth / FLAGS:.0f} bytes per flag) over the idle process for "
        f"{FLAGS:,} flags; the configuration allows {bound / MIB:.1f} MiB: "
        + ", ".join(f"{name} {size / MIB:.1f}" for name, size in parts.items())
        + "; after each step: " + ", ".join(f"{name} {r['after_VmHWM'] / MIB:.0f}" for name, r in result["reads"].items())
    )
