"""How the durable ceiling (bench/ceiling_server.py) was chosen: its variants side by side.

Run: python -m bench.ceiling_variants [--quick] [--rounds N]. The same wrk load as bench.ingest
(64 connections, 20- and 200-toggle bodies) against the bare handler and the ceiling server with
the flush on a thread or on the event loop, one process or two (SO_REUSEPORT), and appending to a
growing file instead of reusing one. Each round runs every variant once, in the same order, so a
slow spell of a shared machine falls on all of them. On a busy machine req/s moves more between
minutes than between variants, so the report compares within rounds: each variant's median ratio
to the bare handler of the same round, and in how many rounds it beat its twin (the variant that
differs from it in one choice). The defaults are the variant that wins the rounds; this is how to
check that it still does.
Quick: 3 s per measurement instead of 8.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.harness import cli, server, wrk
from bench.ingest import BARE_SERVER, CEILING_SERVER, lua_script

BARE, DEFAULT = "bare handler", "thread, reused file (default)"
# name: (command, the variant it differs from in one choice, compared round by round)
VARIANTS = {
    BARE: (BARE_SERVER, None),
    DEFAULT: (CEILING_SERVER, None),
    "loop, reused file": ([*CEILING_SERVER, "--flush", "loop"], DEFAULT),
    "thread, growing file": ([*CEILING_SERVER, "--grow"], DEFAULT),
    "thread, reused file, 2 processes": ([*CEILING_SERVER, "--processes", "2"], DEFAULT),
    "loop, reused file, 2 processes": ([*CEILING_SERVER, "--flush", "loop", "--processes", "2"],
                                       "thread, reused file, 2 processes"),
}


def run(quick: bool = False, rounds: int = 3) -> dict:
    seconds = 3 if quick else 8
    results: dict = {"seconds_per_run": seconds, "rounds": rounds}
    with tempfile.TemporaryDirectory() as tmp:
        for toggles in (20, 200):
            script = lua_script(Path(tmp), toggles)
            runs: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for _ in range(rounds):
                for name, (command, _) in VARIANTS.items():
                    with server(command) as url:
                        wrk(url, "/api/client/metrics", script, 2)
                        runs[name].append(wrk(url, "/api/client/metrics", script, seconds)["rps"])
            results[f"{toggles}_toggles"] = {
                name: {"rps": rps, "median": statistics.median(rps),
                       "median_vs_bare": round(statistics.median(r / b for r, b in zip(rps, runs[BARE])), 3),
                       "twin": twin,
                       "rounds_above_twin": sum(r > t for r, t in zip(rps, runs[twin])) if twin else None}
                for name, rps in runs.items() for twin in [VARIANTS[name][1]]}
    return results


def report(results: dict) -> None:
    rounds = results["rounds"]
    print(f"ceiling variants: {rounds} rounds of {results['seconds_per_run']} s, each round every variant once; "
          "median req/s, median of the per-round ratio to bare, rounds above its twin, then each round's req/s")
    for toggles in (20, 200):
        print(f"{toggles} toggles")
        for name, figures in results[f"{toggles}_toggles"].items():
            each = " ".join(f"{rps:,.0f}" for rps in figures["rps"])
            above = f"  above '{figures['twin']}' in {figures['rounds_above_twin']}/{rounds}" if figures["twin"] else ""
            print(f"  {name:<34}{figures['median']:>9,.0f}{figures['median_vs_bare']:>7.2f} of bare   ({each}){above}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every variant (default 3)")


if __name__ == "__main__":
    cli("ceiling_variants", __doc__, run, report, "3 s per measurement instead of 8", add_arguments)
