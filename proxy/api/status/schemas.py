"""The operator status document (`GET /internal-backstage/status`, `metrics-proxy status`, the page at
`/`): the Structs are its one source of truth, for the answer and for /openapi.json.

Each vendor room contributes one `VendorStatus`; its `queues` are what it sends upstream, one per
Unleash environment, LaunchDarkly project write queue or (later) LaunchDarkly credential. Times are
epoch seconds; secrets never appear (a credential is named by its redacted form)."""

from __future__ import annotations

from typing import Literal

import msgspec

# healthy: sending, or nothing to send; failing: the last attempts failed and are being retried;
# paused: the upstream refused the queue (401/403/404), retried after auth_retry_interval;
# local: no upstream configured, nothing is sent.
QueueState = Literal["healthy", "failing", "paused", "local"]
Cause = Literal["upstream_failing", "paused", "store_full", "dead_letters"]


class Queue(msgspec.Struct, kw_only=True):
    """What waits to be sent to one upstream destination, and how sending it goes."""

    name: str  # the environment, project, or a credential's redacted form
    kind: Literal["environment", "project", "credential"]
    state: QueueState
    stateSince: float | None = None  # when `state` began (known while the proxy runs)
    lastError: str | None = None  # the newest failed attempt's error
    pendingRows: int = 0  # rows not yet cut into payloads (Unleash: app x flag x hour)
    pendingCount: int = 0  # evaluations (yes + no) in those rows and in the payloads
    pendingPayloads: int = 0  # request bodies (outbox batches) cut and not yet delivered
    oldestPendingAge: float | None = None  # seconds since the oldest pending thing was taken
    lastSuccess: float | None = None  # the last delivered payload
    inFlight: int = 0  # payloads being sent now
    attempts: int = 0  # failed attempts of the oldest payload (it is retried with backoff)
    nextAttempt: float | None = None  # while failing or paused: when sending is tried again
    pausedReason: str | None = None
    deadLetters: int = 0  # items the upstream refused for good, kept in dead_letters
    newestDeadLetterReason: str | None = None


class UsageEntry(msgspec.Struct, kw_only=True):
    name: str
    evaluations: int  # yes + no


class MinuteCount(msgspec.Struct, kw_only=True):
    minute: int  # epoch seconds of the minute's start
    evaluations: int


class VendorStatus(msgspec.Struct, kw_only=True):
    """One vendor room's section."""

    vendor: str  # "unleash", "launchdarkly"
    upstream: str | None  # where it sends (credentials in the URL redacted); None: nothing is sent
    queues: list[Queue]
    # Evaluations received per minute, the last 60 minutes oldest first (empty: the room counts none).
    ingestPerMinute: list[MinuteCount] = []
    topFlags: list[UsageEntry] = []  # most evaluated in the last hour, at most 10
    topApps: list[UsageEntry] = []


class StoreStatus(msgspec.Struct, kw_only=True):
    sizeBytes: int  # the database with its -wal and -shm files
    limitBytes: int | None  # max_db_size
    fraction: float | None  # sizeBytes / limitBytes
    refusingIngest: bool  # full: new ingest is answered 503
    droppedRows: dict[str, int] = {}  # metric rows refused at ingest, by reason (since start)
    droppedCounts: dict[str, int] = {}  # acknowledged counts deleted before delivery, by reason (since start)


class Degradation(msgspec.Struct, kw_only=True):
    cause: Cause
    vendor: str | None  # None: the store
    queue: str | None
    message: str


class Thresholds(msgspec.Struct, kw_only=True):
    failingAfter: float  # seconds ([status] failing_after)
    storeFraction: float  # [status] store_percent / 100


class StatusDocument(msgspec.Struct, kw_only=True):
    """The proxy at a glance: `degraded` while any of `degradations` holds."""

    status: Literal["healthy", "degraded"]
    degradations: list[Degradation]
    thresholds: Thresholds
    generatedAt: float
    # "proxy": built by the running proxy; "database": read from the data folder by
    # `metrics-proxy status` with no proxy answering (no live state: in-flight, retry times, drops).
    source: Literal["proxy", "database"]
    version: str
    store: StoreStatus
    ingestPerMinute: list[MinuteCount]  # every vendor's together
    vendors: list[VendorStatus]
