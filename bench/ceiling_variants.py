"""How the durable ceiling (bench/ceiling_server.py) was chosen: its variants side by side.

Run: python -m bench.ceiling_variants [--quick] [--rounds N]. The same wrk load as bench.ingest
(64 connections, 20- and 200-toggle bodies) against the bare handler and the ceiling server with
the flush on a thread or on the event loop, one process or two (SO_REUSEPORT), and appending to a
growing file instead of reusing one. Each round runs every variant once, in the same order, so a
slow spell of a shared machine falls on all of them. On a busy machine req/s moves more between
minutes than between variants, so the report compares within rounds: each variant's median ratio
to the bare handler of the same round, and in how many rounds it beat the ceiling's default. The
defaults are the variant that wins the rounds; this is how to check that it still does.
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
VARIANTS = {
    BARE: BARE_SERVER,
    DEFAULT: CEILING_SERVER,
    "loop, reused file": [*CEILING_SERVER, "--flush", "loop"],
    "thread, growing file": [*CEILING_SERVER, "--grow"],
    "thread, reused file, 2 processes": [*CEILING_SERVER, "--processes", "2"],
    "loop, reused file, 2 processes": [*CEILING_SERVER, "--flush", "loop", "--processes", "2"],
}


def run(quick: bool = False, rounds: int = 3) -> dict:
    seconds = 3 if quick else 8
    results: dict = {"seconds_per_run": seconds, "rounds": rounds}
    with tempfile.TemporaryDirectory() as tmp:
        for toggles in (20, 200):
            script = lua_script(Path(tmp), toggles)
            runs: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for _ in range(rounds):
                for name, command in VARIANTS.items():
                    with server(command) as url:
                        wrk(url, "/api/client/metrics", script, 2)
                        runs[name].append(wrk(url, "/api/client/metrics", script, seconds)["rps"])
            bare, default = runs[BARE], runs[DEFAULT]
            results[f"{toggles}_toggles"] = {
                name: {"rps": rps, "median": statistics.median(rps),
                       "median_vs_bare": round(statistics.median(r / b for r, b in zip(rps, bare)), 3),
                       "rounds_above_default": sum(r > d for r, d in zip(rps, default))}
                for name, rps in runs.items()}
    return results


def report(results: dict) -> None:
    rounds = results["rounds"]
    print(f"ceiling variants: {rounds} rounds of {results['seconds_per_run']} s, each round every variant once; "
          "median req/s, median of the per-round ratio to bare, rounds above the default, then each round's req/s")
    for toggles in (20, 200):
        print(f"{toggles} toggles")
        for name, figures in results[f"{toggles}_toggles"].items():
            each = " ".join(f"{rps:,.0f}" for rps in figures["rps"])
            above = "" if name in (BARE, DEFAULT) else f"{figures['rounds_above_default']}/{rounds}"
            print(f"  {name:<34}{figures['median']:>9,.0f}{figures['median_vs_bare']:>7.2f} of bare"
                  f"{above:>7}   ({each})")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every variant (default 3)")


if __name__ == "__main__":
    cli("ceiling_variants", __doc__, run, report, "3 s per measurement instead of 8", add_arguments)
