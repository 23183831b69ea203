"""Answers of the operational endpoints (/internal-backstage/...)."""

from __future__ import annotations

from typing import Literal

import msgspec


class Health(msgspec.Struct, kw_only=True):
    status: Literal["OK"] = "OK"


class Readiness(msgspec.Struct, kw_only=True, omit_defaults=True):
    """READY, or NOT_READY (503) with the reason a commit cannot work or documents are missing."""

    status: Literal["READY", "NOT_READY"]
    error: str | None = None  # why not ready; absent when ready


class FlushResult(msgspec.Struct, kw_only=True):
    finished: bool  # false: the sends go on in the background after shutdown_flush_timeout
    batchesLeft: int
