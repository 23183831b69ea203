"""A simulated power cut: build the LD_PRELOAD shim (`powercut/powercut.c`) and play its undo logs back.

While a process runs with the shim, every write to a file under the watched directory leaves an
undo record (the bytes it overwrote, the size before it), and an fsync/fdatasync of the file drops
that file's records. After a SIGKILL, `cut_power` undoes the records newest first: each file is
then what a disk holds after a power loss that took every write since the file's last sync. With
`keep` it undoes only a suffix of them instead, as a disk that got the first writes of the
interval onto the platter, in order, before the power went.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

SOURCE = Path(__file__).parent / "powercut" / "powercut.c"
# struct undo_header in powercut.c: magic, reserved, offset, old_size, saved_len; native order.
HEADER = struct.Struct("=IIQQQ")
MAGIC = 0x55434350


def c_compiler() -> str | None:
    return shutil.which("gcc") or shutil.which("cc")


def build_shim(out_dir: Path) -> Path:
    compiler = c_compiler()
    assert compiler, "no C compiler"
    shim = out_dir / "powercut.so"
    result = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(shim), str(SOURCE), "-ldl", "-lpthread"],
        check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return shim


def shim_env(shim: Path, watched: Path, undo_dir: Path) -> dict[str, str]:
    """Environment for a process whose writes under `watched` a power cut can take back.

    The shim is added to what this process already preloads, not put in its place: under
    libfaketime (.ci/run runs the suite with the clock 400 days ahead) the shimmed process must
    keep the shifted clock the test and every other process of the test run on."""
    undo_dir.mkdir(parents=True, exist_ok=True)
    preload = " ".join(lib for lib in (os.environ.get("LD_PRELOAD", "").strip(), str(shim)) if lib)
    return {"LD_PRELOAD": preload, "POWERCUT_DIR": str(watched.resolve()),
            "POWERCUT_UNDO_DIR": str(undo_dir.resolve())}


@dataclass
class UndoRecord:
    offset: int
    old_size: int
    saved: bytes


def read_undo_log(path: Path) -> list[UndoRecord]:
    data = path.read_bytes()
    records, at = [], 0
    while at + HEADER.size <= len(data):
        magic, _, offset, old_size, saved_len = HEADER.unpack_from(data, at)
        assert magic == MAGIC, f"{path}: bad undo record at byte {at}"
        end = at + HEADER.size + saved_len
        if end > len(data):
            break  # the process died writing this record, before the write it guards
        records.append(UndoRecord(offset, old_size, data[at + HEADER.size:end]))
        at = end
    return records


@dataclass
class PowerCut:
    lost_writes: dict[str, int]  # file (relative to the watched directory) -> unsynced writes undone
    kept_writes: dict[str, int]  # unsynced writes that reached the disk anyway (`keep`)


def cut_power(watched: Path, undo_dir: Path, keep: Callable[[int], int] | None = None) -> PowerCut:
    """Turn the files under `watched` into what a power loss leaves. Call after the process died.

    Without `keep` every unsynced write is lost; with it, each file keeps the first `keep(n)` of
    its n unsynced writes (ordered partial loss). `-shm` files are memory: SQLite rebuilds them at open."""
    cut = PowerCut({}, {})
    for log in sorted(undo_dir.glob("*.undo")):
        name = unquote(log.name.removesuffix(".undo"))
        records = read_undo_log(log)
        kept = keep(len(records)) if keep else 0
        with open(watched / name, "r+b") as f:
            for record in reversed(records[kept:]):
                f.truncate(record.old_size)
                f.seek(record.offset)
                f.write(record.saved)
        cut.lost_writes[name], cut.kept_writes[name] = len(records) - kept, kept
        log.unlink()
    for shm in watched.rglob("*-shm"):
        shm.unlink()
    return cut
