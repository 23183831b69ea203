"""The disk reserve (disk_reserve): a file of allocated blocks in the data folder, given back when the
filesystem is full so that the outbox still drains, and allocated again once space returns.

The full filesystem is a real one: a small tmpfs, filled by another file. Mounting it needs root
(CAP_SYS_ADMIN); CI runs .ci/run as root on a fresh machine, so there these tests run. Elsewhere (no
root, or a container that may not mount) they skip and say why. SQLite is not faked: what it answers
on a full filesystem, and where (the -wal, a checkpoint, the -shm), is the point of the test.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from proxy.api.state import STORE
from proxy.config import Settings, load_settings
from proxy.storage.capacity.disk_reserve import RESERVE_FILE
from tests.storage_support import HOUR, SMALL_STORE, metrics_body, prometheus_value, query, quick_check
from tests.support import client_headers
from tests.test_disk_full import fill_until_refused

MiB = 1024 * 1024
SMALL_FS = 16 * MiB
RESERVE = 1 * MiB
# Far above what the tests store: the filesystem fills long before the store's own limit.
LARGE_STORE = 8 * MiB
FLAGS_PER_POST = 20


@pytest.fixture
def small_fs(tmp_path):
    """A tmpfs of SMALL_FS bytes mounted on tmp_path/fs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs .ci/run as root)")
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_FS},mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (CI runs .ci/run as root): {done.stderr.strip()}")
    yield mount
    if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mount)], check=True)  # still open somewhere: detach it


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path) -> int:
    """Append to `path` until the filesystem has no byte left; returns the bytes written."""
    written = 0
    with open(path, "ab", buffering=0) as fh:
        for chunk in (MiB, 64 * 1024, 4096, 1):
            block = b"x" * chunk
            while True:
                try:
                    written += fh.write(block)
                except OSError:
                    break
    return written


def flags_of(n: int) -> list[str]:
    return [f"p{n:04d}-flag-{j:02d}" for j in range(FLAGS_PER_POST)]


async def post(client, hour: float, n: int) -> int:
    resp = await client.post("/api/client/metrics", json=metrics_body(hour, flags_of(n), yes=n + 1),
                             headers=client_headers())
    if resp.status != 202:
        assert resp.status == 503, await resp.text()
        assert int(resp.headers["Retry-After"]) > 0
    return resp.status


async def post_many(client, hour: float, numbers: range, acked: dict[str, int], until_refused: int = 0) -> Counter:
    """Post each number's flags (until `until_refused` in a row are refused, if given); the
    acknowledged ones go into `acked` (flag -> yes + no)."""
    statuses: Counter = Counter()
    in_a_row = 0
    for n in numbers:
        status = await post(client, hour, n)
        statuses[status] += 1
        if status == 202:
            acked.update({flag: n + 2 for flag in flags_of(n)})
        in_a_row = in_a_row + 1 if status == 503 else 0
        if until_refused and in_a_row == until_refused:
            break
    return statuses


def delivered_by_flag(stub) -> dict[str, int]:
    delivered: Counter = Counter()
    for (_env, _app, flag, _ts, _answer), count in stub.delivered_totals().items():
        delivered[flag] += count
    return dict(delivered)


async def scrape(client, name: str) -> float | None:
    return prometheus_value(await (await client.get("/internal-backstage/prometheus")).text(), name)


async def fill_the_filesystem_under_traffic(client, store, hour: float, mount: Path, acked: dict[str, int]) -> None:
    """Acknowledged counts, some folded and some still in the journal; then another file takes the
    whole filesystem, and SDKs keep posting until the proxy refuses them. (Commits go on for a while
    in blocks the -wal file already has; its frames cannot be checkpointed into a database file
    that cannot grow, so the -wal must grow, and then nothing commits.)"""
    assert (await post_many(client, hour, range(0, 30), acked))[202] == 30
    assert store.fold()
    assert (await post_many(client, hour, range(30, 60), acked))[202] == 30
    fill(mount / "other-file")
    statuses = await post_many(client, hour, range(60, 2000), acked, until_refused=10)
    assert statuses[503] >= 10, statuses


async def test_without_a_reserve_a_full_filesystem_stalls_forwarding(small_fs, forwarding_client, stub, clock):
    """What issue 17 describes: no batch can be cut on a full filesystem, so nothing forwards."""
    client = await forwarding_client({"data_dir": str(small_fs / "data"), "max_db_size": LARGE_STORE,
                                      "disk_reserve": 0},
                                     shutdown_flush_timeout=1.0)
    store = client.server.app[STORE]
    hour = clock.now() // HOUR * HOUR
    acked: dict[str, int] = {}
    await fill_the_filesystem_under_traffic(client, store, hour, small_fs, acked)

    await client.forwarder.flush()
    assert delivered_by_flag(stub) == {}  # stalled: not one acknowledged count went out
    assert not (small_fs / "data" / RESERVE_FILE).exists()
    await client.close()


async def test_the_reserve_drains_a_full_filesystem_and_comes_back_when_space_returns(
    small_fs, forwarding_client, stub, clock,
):
    data = small_fs / "data"
    client = await forwarding_client({"data_dir": str(data), "max_db_size": LARGE_STORE, "disk_reserve": RESERVE,
                                      "fold_interval": 0.1}, shutdown_flush_timeout=1.0)
    store = client.server.app[STORE]
    reserve_file = data / RESERVE_FILE
    assert reserve_file.stat().st_size == RESERVE
    assert reserve_file.stat().st_blocks * 512 >= RESERVE  # real blocks, not a sparse file
    assert await scrape(client, "metrics_proxy_disk_reserve_held_bytes") == RESERVE
    hour = clock.now() // HOUR * HOUR
    acked: dict[str, int] = {}
    await fill_the_filesystem_under_traffic(client, store, hour, small_fs, acked)

    # The first write that found the filesystem full gave the reserve back; ingest is refused while
    # less than the reserve is free, and the proxy says it is not ready, naming the filesystem.
    assert reserve_file.stat().st_size == 0
    assert await scrape(client, "metrics_proxy_disk_reserve_released_total") == 1
    assert await scrape(client, "metrics_proxy_disk_reserve_held_bytes") == 0
    assert await scrape(client, "metrics_proxy_disk_reserve_in_use") == 1
    ready = await client.get("/internal-backstage/ready")
    assert ready.status == 503 and "filesystem" in (await ready.json())["error"]

    # The outbox drains into the space the reserve gave back: every acknowledged count, exactly.
    assert await client.forwarder.flush() == 0
    assert delivered_by_flag(stub) == acked
    assert query(store.path, "SELECT count(*) FROM journal") == [(0,)]
    assert query(store.path, "SELECT count(*) FROM pending_counts") == [(0,)]
    assert quick_check(store.path) == "ok"
    assert await post(client, hour, 500) == 503  # still full: ingest waits for space

    # Space returns: the folder allocates the reserve again and ingest resumes.
    (small_fs / "other-file").unlink()
    for _ in range(100):
        if store.disk_reserve.held:
            break
        await asyncio.sleep(0.05)
    assert reserve_file.stat().st_size == RESERVE and reserve_file.stat().st_blocks * 512 >= RESERVE
    assert await scrape(client, "metrics_proxy_disk_reserve_restored_total") == 1
    assert await scrape(client, "metrics_proxy_disk_reserve_in_use") == 0
    # The store's part of /internal-backstage/ready (the stub serves no feature documents, which
    # keeps the whole answer at 503 here).
    assert store.check_writable(clock.now()) is None
    before = dict(acked)
    assert (await post_many(client, hour, range(1000, 1010), acked))[202] == 10
    assert await client.forwarder.flush() == 0
    assert delivered_by_flag(stub) == acked and len(acked) == len(before) + 10 * FLAGS_PER_POST
    await client.close()


async def test_a_store_at_max_db_size_keeps_its_disk_reserve(make_client, clock):
    """SQLITE_FULL from the page limit is not a full filesystem: the reserve stays where it is."""
    client = await make_client(max_db_size=SMALL_STORE, disk_reserve=RESERVE)
    store = client.server.app[STORE]
    await fill_until_refused(client, clock.now() // HOUR * HOUR)
    assert store.disk_reserve.held and store.disk_reserve.releases == 0
    assert (store.path.parent / RESERVE_FILE).stat().st_size == RESERVE
    ready = await (await client.get("/internal-backstage/ready")).json()
    assert "max_db_size" in ready["error"]


def test_the_default_reserve_follows_max_db_size_and_0_turns_it_off():
    assert Settings().disk_reserve_bytes == 64 * MiB  # max_db_size 1 GiB: the cap
    assert Settings(max_db_size=80 * MiB).disk_reserve_bytes == 10 * MiB  # an eighth
    assert Settings(max_db_size=80 * MiB, disk_reserve=3 * MiB).disk_reserve_bytes == 3 * MiB
    assert load_settings(environ={"METRICS_PROXY_DISK_RESERVE": "0"}).disk_reserve_bytes == 0


async def test_a_reserve_with_no_room_at_start_is_a_floor_on_free_space_until_there_is_room(
    small_fs, make_client, clock,
):
    """A volume that cannot hold the reserve and as much again: the file waits for room, and
    meanwhile ingest is refused only once less than the reserve is free."""
    filler = small_fs / "other-file"
    with open(filler, "wb") as fh:
        fh.write(b"x" * (SMALL_FS - RESERVE - RESERVE // 2))  # about 1.5 reserves left free
    client = await make_client(data_dir=str(small_fs / "data"), max_db_size=LARGE_STORE, disk_reserve=RESERVE)
    store = client.server.app[STORE]
    assert not store.disk_reserve.held and not (small_fs / "data" / RESERVE_FILE).exists()
    hour = clock.now() // HOUR * HOUR
    assert await post(client, hour, 0) == 202
    assert store.check_writable(clock.now()) is None

    with open(filler, "ab") as fh:  # another writer takes the floor
        fh.write(b"x" * (free_bytes(small_fs) - RESERVE // 2))
    assert await post(client, hour, 1) == 503
    assert "filesystem" in store.check_writable(clock.now())
    assert await scrape(client, "metrics_proxy_disk_reserve_in_use") == 1
    await store.disk_reserve.maintain()  # no room yet
    assert not store.disk_reserve.held

    filler.unlink()
    await store.disk_reserve.maintain()
    assert store.disk_reserve.held and store.disk_reserve.restores == 1
    assert await post(client, hour, 2) == 202
    assert store.fold()
    assert query(store.path, "SELECT count(*) FROM hourly_counts")[0][0] == 2 * FLAGS_PER_POST
    await client.close()


async def test_the_reserve_file_outlives_a_restart_and_0_removes_it(make_client, make_settings):
    client = await make_client(disk_reserve=RESERVE)
    reserve_file = client.server.app[STORE].path.parent / RESERVE_FILE
    inode = reserve_file.stat().st_ino
    await client.close()
    assert reserve_file.stat().st_size == RESERVE  # kept while the proxy is down: the space stays held

    client = await make_client(disk_reserve=RESERVE)
    assert client.server.app[STORE].disk_reserve.held and reserve_file.stat().st_ino == inode
    await client.close()

    client = await make_client(disk_reserve=0)
    assert not reserve_file.exists()
    assert await scrape(client, "metrics_proxy_disk_reserve_bytes") == 0
    await client.close()
