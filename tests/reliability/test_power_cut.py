"""Reliability requirement 4 (tests/reliability/README.md), the power-cut half: no acknowledged count is lost to a power loss
under `synchronous = FULL`, and the simulator is shown to catch the loss `NORMAL` allows.

A real `python -m proxy serve` runs with the LD_PRELOAD shim of `power_cut.py`, which keeps an
undo record of every write to its data directory until the file is synced. Concurrent SDKs post
metrics, each post under a flag of its own; the proxy is SIGKILLed mid-load (at a random moment,
or aimed inside a commit or a checkpoint, while a file has unsynced writes) and `cut_power` takes
back every write since each file's last fsync (or, every other cycle, all but a random prefix of
them), as a power loss would. Then a proxy WITHOUT the shim starts on the same directory and the
per-flag totals are read back: under FULL every post answered 202 is there exactly once, a post
whose answer was lost to the kill is there once or not at all, nothing else is. The files must
pass `PRAGMA quick_check` as the cut left them, and the proxy must not quarantine them.

The same run under NORMAL must lose acknowledged posts (WAL + NORMAL syncs only at checkpoints):
if it does not, the shim is not seeing the writes and the FULL result proves nothing. Even there
a post is stored whole or not at all, and the database stays consistent.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from proxy.storage.integrity import quick_check
from tests.reliability.ledger import ACKED, REFUSED, UNKNOWN, Ledger, load
from tests.reliability.power_cut import (
    PowerCut,
    build_shim,
    c_compiler,
    cut_power,
    shim_env,
)
from tests.support import ADMIN_TOKEN, ProxyProcess

LONG = os.environ.get("RELIABILITY_LONG") == "1"
FULL_CYCLES = 30 if LONG else 6
NORMAL_CYCLES = 10 if LONG else 4
WORKERS = 12
DB_NAME = "metrics-proxy.db"


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    if not c_compiler():
        pytest.skip("no C compiler (gcc or cc) to build the power-cut shim; .ci/run installs gcc")
    return build_shim(tmp_path_factory.mktemp("powercut-shim"))


# Writes through every call the shim interposes, some synced, then waits to be killed.
WRITER = r"""
import os, sys, time
watched, outside = sys.argv[1], sys.argv[2]
fd = os.open(os.path.join(watched, "a.bin"), os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b"A" * 100)
os.fsync(fd)
os.pwrite(fd, b"B" * 10, 50)
os.ftruncate(fd, 80)
os.pwrite(fd, b"C" * 30, 90)
os.lseek(fd, 0, os.SEEK_SET)
os.write(fd, b"D" * 5)
with open(os.path.join(watched, "sub", "b.bin"), "wb") as f:
    f.write(b"x" * 10)
    f.flush()
    os.fsync(f.fileno())
with open(os.path.join(watched, "sub", "b.bin"), "wb") as f:  # O_TRUNC on a synced file
    f.write(b"y" * 3)
fd = os.open(os.path.join(watched, "c.bin"), os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b"1" * 20)
os.fdatasync(fd)
os.write(fd, b"2" * 20)
for path in (os.path.join(watched, "x.db-shm"), os.path.join(outside, "o.bin")):
    with open(path, "wb") as f:
        f.write(b"kept")
print("ready", time.time(), flush=True)
time.sleep(60)
"""


def a_bin_states() -> list[bytes]:
    """a.bin after the synced write, then after each of its four unsynced calls."""
    states = [b"A" * 100]
    states.append(states[-1][:50] + b"B" * 10 + states[-1][60:])
    states.append(states[-1][:80])
    states.append(states[-1] + bytes(10) + b"C" * 30)
    states.append(b"D" * 5 + states[-1][5:])
    return states


def run_writer_and_cut(tmp_path: Path, shim: Path, keep) -> tuple[Path, Path, PowerCut]:
    watched, outside, undo = tmp_path / "watched", tmp_path / "outside", tmp_path / "undo"
    for folder in (watched / "sub", outside):
        folder.mkdir(parents=True)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(watched), str(outside)],
                              env={**os.environ, **shim_env(shim, watched, undo)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = writer.stdout.readline().split()
        assert ready[:1] == ["ready"], writer.stderr.read()
    finally:
        writer.kill()
        writer.wait(10)
    # The shim joins the preloads instead of replacing them: a shifted clock (libfaketime) holds
    # in the shimmed process too.
    assert abs(float(ready[1]) - time.time()) < 60, f"the shimmed process's clock is {ready[1]}, ours {time.time()}"
    return watched, outside, cut_power(watched, undo, keep=keep)


def test_the_simulator_leaves_what_was_synced(tmp_path, shim):
    watched, outside, cut = run_writer_and_cut(tmp_path, shim, keep=None)
    assert (watched / "a.bin").read_bytes() == a_bin_states()[0]
    assert (watched / "sub" / "b.bin").read_bytes() == b"x" * 10
    assert (watched / "c.bin").read_bytes() == b"1" * 20
    assert not (watched / "x.db-shm").exists()
    assert (outside / "o.bin").read_bytes() == b"kept"
    assert cut.lost_writes == {"a.bin": 4, "sub/b.bin": 2, "c.bin": 1}
    assert not list((tmp_path / "undo").iterdir())


def test_a_partial_cut_keeps_the_first_unsynced_writes_in_order(tmp_path, shim):
    watched, _, cut = run_writer_and_cut(tmp_path, shim, keep=lambda n: min(n, 2))
    assert (watched / "a.bin").read_bytes() == a_bin_states()[2]
    assert (watched / "sub" / "b.bin").read_bytes() == b"y" * 3
    assert (watched / "c.bin").read_bytes() == b"1" * 20 + b"2" * 20
    assert cut.kept_writes == {"a.bin": 2, "sub/b.bin": 2, "c.bin": 1}
    assert cut.lost_writes == {"a.bin": 2, "sub/b.bin": 0, "c.bin": 0}


async def stored_counts(url: str) -> dict[str, int]:
    async with (aiohttp.ClientSession(headers={"Authorization": ADMIN_TOKEN}) as session,
                session.get(url + "/api/client/metrics/feature-toggles") as response):
        assert response.status == 200, await response.text()
        windows = await response.json()
    return {flag: counts["yes"] for flag, counts in windows["lastHour"].items()}


def check_as_cut(data_dir: Path, scratch: Path) -> str | None:
    """quick_check of a copy of the files exactly as the cut left them (opening them recovers
    the WAL, so the proxy gets its own untouched copy)."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    for name in (DB_NAME, DB_NAME + "-wal"):
        if (data_dir / name).exists():
            shutil.copy(data_dir / name, scratch / name)
    return quick_check(scratch / DB_NAME)


def kill_with_unsynced_writes(proxy: ProxyProcess, undo_log: Path, timeout: float = 5.0) -> None:
    """SIGKILL as soon as the file of `undo_log` has unsynced writes (or at `timeout`). For the
    -wal file that is inside a commit, between its write and its fsync; for the database file,
    inside a checkpoint (a few ms every 1000 WAL pages). Random kills land there only by luck."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if undo_log.exists() and undo_log.stat().st_size > 0:
            break
        time.sleep(0.0005)
    proxy.kill()


def misfits(ledger: Ledger, stored: dict[str, int]) -> tuple[list, list]:
    """(acknowledged posts missing, anything else the store contradicts: partial, doubled, foreign)."""
    missing, wrong = [], []
    for flag, (yes, outcome) in ledger.posts.items():
        got = stored.get(flag, 0)
        if outcome == ACKED and got == 0:
            missing.append(flag)
        elif got not in ({yes} if outcome == ACKED else {0} if outcome == REFUSED else {0, yes}):
            wrong.append((flag, yes, outcome, got))
    wrong += [(flag, None, "never sent", got) for flag, got in stored.items() if flag not in ledger.posts]
    return missing, wrong


async def power_cut_cycles(tmp_path: Path, shim: Path, synchronous: str, cycles: int, seed: int):
    """Run `cycles` load + power cut + verified restart cycles; returns the ledger, the flags
    missing after the last cycle, and every cut."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    undo_dir = tmp_path / "undo"
    # Every post counts under a flag of its own, read back from one feature-toggles answer: it must
    # list them all (read_max_flags, docs/reads.md).
    common = {"METRICS_PROXY_SYNCHRONOUS": synchronous, "METRICS_PROXY_FOLD_INTERVAL": "0.2",
              "METRICS_PROXY_READ_MAX_FLAGS": "1000000"}
    powered = ProxyProcess(data_dir, extra_env={**common, **shim_env(shim, data_dir, undo_dir)})
    plain = ProxyProcess(data_dir, extra_env=common)
    ledger, cuts, missing = Ledger(), [], []
    rng = random.Random(seed)
    try:
        for cycle in range(cycles):
            await asyncio.to_thread(powered.start)
            stop = asyncio.Event()
            workers = [asyncio.create_task(load(powered.url, ledger, stop, cycle, w)) for w in range(WORKERS)]
            if cycle % 3 == 2:  # into a checkpoint: database pages written, not yet synced
                await asyncio.to_thread(kill_with_unsynced_writes, powered, undo_dir / (DB_NAME + ".undo"))
            elif cycle % 3 == 1:  # into a commit: -wal frames written, not yet synced
                await asyncio.sleep(rng.uniform(0.2, 0.6))
                await asyncio.to_thread(kill_with_unsynced_writes, powered, undo_dir / (DB_NAME + "-wal.undo"))
            else:
                await asyncio.sleep(rng.uniform(0.4, 1.2))
                await asyncio.to_thread(powered.kill)
            stop.set()
            await asyncio.gather(*workers)
            partial = (lambda n: rng.randint(0, n)) if cycle % 2 else None  # every other cut keeps a prefix
            cut = cut_power(data_dir, undo_dir, keep=partial)
            cuts.append(cut)

            problem = check_as_cut(data_dir, tmp_path / "as-cut")
            assert problem is None, f"{synchronous} cycle {cycle}: quick_check after the cut: {problem}"
            await asyncio.to_thread(plain.start)
            stored = await stored_counts(plain.url)
            assert await asyncio.to_thread(plain.terminate) == 0
            assert not (data_dir / "quarantine").exists(), plain.log()[-2000:]
            missing, wrong = misfits(ledger, stored)
            assert not wrong, (synchronous, cycle, wrong[:20])
            if synchronous == "FULL":
                assert not missing, (cycle, len(missing), missing[:20], cut)
    finally:
        powered.stop()
        plain.stop()
    assert "powercut shim:" not in powered.log(), "the shim aborted: " + powered.log()[-2000:]
    return ledger, missing, cuts


def inside_checkpoints(cuts: list[PowerCut]) -> list[PowerCut]:
    """The cuts that found database-file writes unsynced: only a checkpoint writes that file."""
    return [c for c in cuts if c.lost_writes.get(DB_NAME) or c.kept_writes.get(DB_NAME)]


def summary(ledger: Ledger, missing: list, cuts: list[PowerCut]) -> str:
    outcomes = ledger.outcomes()
    lost = sum(sum(c.lost_writes.values()) for c in cuts)
    kept = sum(sum(c.kept_writes.values()) for c in cuts)
    return (f"{len(cuts)} cuts: {outcomes[ACKED]} posts acknowledged, {len(missing)} of them lost; "
            f"{outcomes[UNKNOWN]} in flight, {outcomes[REFUSED]} refused; {lost} unsynced writes undone, "
            f"{kept} kept (partial cuts); {len(inside_checkpoints(cuts))} cuts inside a checkpoint")


async def test_power_cut_under_full_loses_no_acknowledged_count(tmp_path, shim):
    ledger, missing, cuts = await power_cut_cycles(tmp_path, shim, "FULL", FULL_CYCLES, seed=4)
    print(summary(ledger, missing, cuts))
    assert ledger.outcomes()[ACKED] > 50 * FULL_CYCLES
    # Cuts came inside commits (-wal written, not yet synced) and inside checkpoints (database file
    # written, not yet synced), not only between them.
    wal = DB_NAME + "-wal"
    assert any(c.lost_writes.get(wal) or c.kept_writes.get(wal) for c in cuts), cuts
    assert inside_checkpoints(cuts), cuts


async def test_power_cut_under_normal_loses_acknowledged_counts_but_stays_consistent(tmp_path, shim):
    ledger, missing, cuts = await power_cut_cycles(tmp_path, shim, "NORMAL", NORMAL_CYCLES, seed=5)
    print(summary(ledger, missing, cuts))
    assert ledger.outcomes()[ACKED] > 50 * NORMAL_CYCLES
    assert missing, "NORMAL lost nothing: the shim is not capturing the proxy's writes"
