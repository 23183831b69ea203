"""Run every benchmark: `python -m bench [--quick] [names...]`. Each prints its figures beside a
baseline measured in the same run and saves JSON under bench/results/."""

from __future__ import annotations

import argparse
import importlib
import json
import time

from bench.harness import save

BENCHES = ["ingest", "ld_events", "reads", "prometheus", "economy", "drain", "memory", "cardinality", "startup", "large_posts"]
# Not in --quick: running three servers under valgrind takes ~2 minutes by itself.
FULL_ONLY = ["instructions"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs (about 3 minutes in all)")
    parser.add_argument("names", nargs="*", help=f"subset of: {', '.join(BENCHES + FULL_ONLY)}")
    args = parser.parse_args()
    summary = {}
    for name in args.names or (BENCHES if args.quick else BENCHES + FULL_ONLY):
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError:
            continue
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            results = module.run(quick=args.quick)
        except SystemExit as exc:  # a missing tool (e.g. wrk): say so and run the others
            print(f"skipped {name}: {exc}", flush=True)
            continue
        module.report(results)
        save(name, results)
        summary[name] = {"seconds": round(time.perf_counter() - started, 1), **results}
    print("saved", save("all", summary))
    print(json.dumps({k: v["seconds"] for k, v in summary.items()}))


if __name__ == "__main__":
    main()
