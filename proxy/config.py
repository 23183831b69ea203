"""Settings: msgspec Structs, filled from defaults < TOML file < environment < command-line flags.

Every option has the same name in all three places: `port` in the file, `METRICS_PROXY_PORT` in the
environment, `--port` on the command line; nested tables join with an underscore
(`[upstream] url` is `METRICS_PROXY_UPSTREAM_URL`).

Each field says what it means in its own metadata (`option(...)`): docs/configuration.md and
config/metrics-proxy.toml are generated from it (proxy/commands/reference.py), and a test fails
when they disagree with this file.
"""

from __future__ import annotations

import argparse
import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

ENV_PREFIX = "METRICS_PROXY_"

PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]

# The default disk_reserve: max_db_size / DISK_RESERVE_DIVISOR, at most DEFAULT_DISK_RESERVE_MAX (the
# same as the -wal file's share of max_db_size, storage/capacity/limits.py).
DISK_RESERVE_DIVISOR = 8
DEFAULT_DISK_RESERVE_MAX = 64 * 1024 * 1024


def option(description: str, *, group: str | None = None, flag: bool = False, example: Any = None,
           **constraints: Any) -> msgspec.Meta:
    """A field's metadata: what it means (Markdown; links are relative to docs/), the section of
    the reference it is listed in (`group`, a key of GROUPS; nested tables are sections of their
    own), whether `serve` has a `--flag` for it, an example value, and msgspec constraints."""
    extra: dict[str, Any] = {}
    if group is not None:
        extra["group"] = group
    if flag:
        extra["flag"] = True
    examples = None if example is None else [example]
    return msgspec.Meta(description=description, examples=examples, extra=extra or None, **constraints)


# The sections of the top-level options in docs/configuration.md, in order: title, and what the
# reference says below the table.
GROUPS: dict[str, tuple[str, str]] = {
    "listen": ("Listening, storage and auth",
               "A token whose environment is `*`, or that does not follow the `project:environment.secret` "
               "format, files its counts under `default`. SDKs may send the token raw or after `Bearer `."),
    "store": ("Durability and the store", "More: [durability.md](durability.md)."),
    "processes": ("Processes and connections", "More: [workers.md](workers.md), [connections.md](connections.md)."),
    "logs": ("Logs", "More: [observability.md](observability.md#logs)."),
    "limits": ("Inbound rate limits",
               "Off by default (right for a sidecar, whose only client is its own app). For a shared tier "
               "see [deploying.md](deploying.md#inbound-rate-limits) for suggested values."),
    "reads": ("Reads", "More: [reads.md](reads.md)."),
    "extras": ("Custom metrics, impact metrics, Prometheus, tokens",
               "More: [observability.md](observability.md), [forwarding.md](forwarding.md#tokens-checked-upstream)."),
    "features": ("Feature definitions", "More: [features.md](features.md)."),
}


class ConfigError(Exception):
    """A bad option: the message is one line that names the option."""


class UpstreamSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[upstream]` table: where counts are forwarded to."""

    url: Annotated[str, option(
        "the upstream's API base, e.g. `http://unleash:4242/api` (or another proxy's `/api`); `http://` or "
        "`https://`", example="http://unleash:4242/api")]
    tokens: Annotated[dict[str, str], option(
        "one upstream client token per environment: Unleash binds a client token to one environment, and its "
        "bulk endpoint silently drops rows of any other. An environment without one keeps its counts pending",
        example={"development": "default:development.upstream-secret"})] = {}
    flush_interval: Annotated[PositiveSeconds, option("seconds between sends")] = 10.0
    request_timeout: Annotated[PositiveSeconds, option("seconds per upstream request")] = 30.0
    headers: Annotated[dict[str, str], option(
        "added to every upstream request (they override the proxy's identity headers; `Authorization` is "
        "ignored)", example={"X-Extra": "value"})] = {}
    app_name: Annotated[str, option(
        "sent as `UNLEASH-APPNAME`; the instance id is generated once and kept in the database")] = "metrics-proxy"
    max_body_bytes: Annotated[int, option(
        "largest uncompressed request body in bytes (95 KiB: Unleash's body parser refuses bodies over 100 kB, "
        "so the proxy stays below it as Unleash Edge does)", ge=1024)] = 95 * 1024
    compress: Annotated[bool, option(
        "bulk bodies go gzip-compressed with `Content-Encoding: gzip`, which Unleash accepts; `max_body_bytes` "
        "still bounds the uncompressed body, the size Unleash's parser limits")] = True
    max_in_flight: Annotated[int, option(
        "requests at once per environment while a backlog drains", ge=1, le=64)] = 4
    retry_initial: Annotated[PositiveSeconds, option(
        "429 / 408 / 5xx / network errors: the backoff starts here (exponential, full jitter)")] = 1.0
    retry_max: Annotated[PositiveSeconds, option(
        "... and is capped here; there is no overall time budget (one would discard the oldest counts in a "
        "long outage)")] = 300.0
    auth_retry_interval: Annotated[PositiveSeconds, option(
        "401 / 403 / 404 pause the environment this long; its batches are kept")] = 300.0
    shutdown_flush_timeout: Annotated[PositiveSeconds, option(
        "on SIGTERM, and for `metrics-proxy flush`, the last flush may take this long; what is not delivered "
        "stays on disk. Give a container or unit a stop timeout above it ([deploying.md](deploying.md))")] = 20.0
    instance_refresh_interval: Annotated[float, option(
        "a known SDK instance is announced upstream again (its last-seen time refreshed) at most this often; "
        "new instances go out in the next batch. 0: every instance seen, in every batch", ge=0)] = 60.0


class LaunchDarklyEnvironment(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One `[launchdarkly.environments.NAME]` table: the credentials SDKs of that environment send
    their events with (Relay's convention), and the project its flags and metrics belong to."""

    sdk_key: Annotated[str | None, option(
        "server-side SDKs post `/bulk` and `/diagnostic` with it", example="sdk-00000000-0000-0000-0000-000000000000")] = None
    mobile_key: Annotated[str | None, option(
        "mobile SDKs post `/mobile`, `/mobile/events`, `/mobile/events/bulk`, `/mobile/events/diagnostic` with it",
        example="mob-00000000-0000-0000-0000-000000000000")] = None
    client_side_id: Annotated[str | None, option(
        "browser SDKs post `/events/bulk/{clientSideId}` and `/events/diagnostic/{clientSideId}` (not a secret)",
        example="5f0000000000000000000000")] = None
    project: Annotated[str, option(
        "the LaunchDarkly project whose metrics count this environment's custom events")] = "default"


class LaunchDarklySettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[launchdarkly]` table: the metrics and metric-groups REST API ([launchdarkly.md](launchdarkly.md))."""

    access_tokens: Annotated[list[str], option(
        "with `auth = \"tokens\"`: the REST access tokens accepted locally, sent raw in `Authorization` as "
        "LaunchDarkly's are (no `Bearer`). With `auth = \"open\"` any non-empty token is accepted",
        example=["api-local-token"])] = []
    require_beta_header: Annotated[bool, option(
        "metric-group calls without `LD-API-Version: beta` get 403, as LaunchDarkly documents; false accepts "
        "them (the official generated clients do not send it by themselves)")] = True
    api_url: Annotated[str | None, option(
        "the upstream LaunchDarkly, e.g. `https://app.launchdarkly.com`; with `api_token`, writes go through "
        "to it and reads are refreshed from it. Without both the local store is authoritative",
        example="https://app.launchdarkly.com")] = None
    api_token: Annotated[str | None, option(
        "the access token the proxy uses at `api_url`", example="api-upstream-token")] = None
    refresh_interval: Annotated[PositiveSeconds, option(
        "seconds between refreshes, from the upstream, of every project asked about")] = 60.0
    request_timeout: Annotated[PositiveSeconds, option("seconds per upstream LaunchDarkly request")] = 10.0
    retry_initial: Annotated[PositiveSeconds, option(
        "replaying queued writes: the backoff starts here (full jitter, `Retry-After` a floor), as `[upstream]`")] = 1.0
    retry_max: Annotated[PositiveSeconds, option("... and is capped here")] = 300.0
    auth_retry_interval: Annotated[PositiveSeconds, option(
        "a 401 / 403 on replay pauses the queue this long; its writes are kept; SDK events: a 401 / 403 / 404 "
        "pauses that credential this long, its events are kept")] = 300.0
    events_url: Annotated[str | None, option(
        "where SDK events and metric imports are sent, e.g. `https://events.launchdarkly.com`. Absent: events "
        "stay local (counted, not sent) ([launchdarkly.md](launchdarkly.md#sdk-events))",
        example="https://events.launchdarkly.com")] = None
    flush_interval: Annotated[PositiveSeconds, option(
        "seconds between cuts of the stored events into batches (and sends to `events_url`)")] = 5.0
    environments: Annotated[dict[str, LaunchDarklyEnvironment], option(
        "the environments SDKs send events for, by name: `[launchdarkly.environments.NAME]` with `sdk_key`, "
        "`mobile_key`, `client_side_id`, `project`. With `auth = \"tokens\"` only these credentials are "
        "accepted; with `auth = \"open\"` any, filed under an environment named after a masked form of it. "
        "In the environment, a JSON object: `{\"production\": {\"sdk_key\": \"sdk-...\"}}`",
        example={"production": {"sdk_key": "sdk-00000000-0000-0000-0000-000000000000", "project": "default"}})] = {}
    import_token: Annotated[str | None, option(
        "the access token metric imports are sent to `events_url` with (LaunchDarkly recommends one with only "
        "the `importEventData` action). Absent: imports are counted locally and not sent",
        example="api-import-token")] = None
    events_batch_events: Annotated[int, option(
        "most events in one batch sent to `events_url` (Relay's default queue capacity per flush)",
        ge=1)] = 1000
    events_batch_bytes: Annotated[int, option(
        "largest uncompressed batch body in bytes (LaunchDarkly takes up to 10 MB)", ge=1024)] = 5 * 1024 * 1024
    payload_id_window: Annotated[PositiveSeconds, option(
        "seconds a repeated `X-LaunchDarkly-Payload-ID` from the same credential is answered 202 and not stored "
        "again (SDKs resend a post within seconds; `idempotency_window` applies to Unleash bulk posts)")] = 900.0
    events_max_in_flight: Annotated[int, option(
        "requests at once per credential while a backlog drains", ge=1, le=64)] = 2
    shutdown_flush_timeout: Annotated[PositiveSeconds, option(
        "on SIGTERM the last send of events may take this long; what is not delivered stays on disk")] = 20.0

    @property
    def events(self) -> bool:
        """SDK events are sent upstream (else only kept and counted locally)."""
        return bool(self.events_url)

    @property
    def upstream(self) -> bool:
        return bool(self.api_url and self.api_token)


class StatusSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[status]` table: when the status page and `GET /internal-backstage/status` say `degraded`
    ([status.md](status.md))."""

    failing_after: Annotated[float, option(
        "seconds an upstream (an Unleash environment, a LaunchDarkly project's write queue) may keep failing "
        "before the status turns `degraded`; short outages that the retries absorb stay `healthy`", ge=0)] = 300.0
    store_percent: Annotated[int, option(
        "the status turns `degraded` once the store holds more than this percentage of `max_db_size`",
        ge=1, le=100)] = 80


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: Annotated[str, option(
        "address to listen on (`0.0.0.0` in a container; the `Dockerfile` sets it)",
        group="listen", flag=True)] = "127.0.0.1"
    port: Annotated[int, option(
        "port to listen on; 3063 is Unleash Edge's port, so the proxy is a drop-in",
        group="listen", flag=True, ge=0, le=65535)] = 3063
    data_dir: Annotated[str, option(
        "folder of the SQLite database (`metrics-proxy.db` and its `-wal` / `-shm`), the workers' "
        "`ingest-<k>.db` and `quarantine/`. Keep it on a local disk (WAL does not work on network "
        "filesystems); in Kubernetes an `emptyDir` survives container restarts, a PersistentVolume survives "
        "rescheduling", group="listen", flag=True)] = "data"
    auth: Annotated[Literal["tokens", "open"], option(
        "`tokens`: only the listed tokens (missing -> 401, unknown or wrong kind -> 403), plus, with an "
        "`[upstream]`, tokens the upstream confirms. `open`: local development; any request is accepted and "
        "counts are filed under the environment `default`", group="listen", flag=True)] = "tokens"
    client_tokens: Annotated[list[str], option(
        "tokens for the client API (metrics, register, bulk, custom, features), in Unleash's format "
        "`project:environment.secret`; the environment of every count comes from the token, never from the "
        "body", group="listen", example=["default:development.some-secret"])] = []
    frontend_tokens: Annotated[list[str], option(
        "tokens for `/api/frontend/client/...`", group="listen")] = []
    admin_tokens: Annotated[list[str], option(
        "tokens for the read endpoints and `POST /internal-backstage/flush` (`metrics-proxy flush` sends the "
        "first)", group="listen", example=["*:*.some-admin-secret"])] = []
    max_body_size: Annotated[int, option(
        "largest request body in bytes, also after gzip/deflate decompression; larger -> 413",
        group="listen", ge=1024)] = 1024 * 1024
    synchronous: Annotated[Literal["FULL", "NORMAL", "OFF"], option(
        "SQLite durability of the commit behind every 202: `FULL` survives a process kill and a power cut "
        "(one fsync per group commit); `NORMAL` survives a process kill, the last commits may be lost on power "
        "loss; `OFF` survives a process kill only, power loss may corrupt the database "
        "([durability.md](durability.md#synchronous-what-survives-what))", group="store")] = "FULL"
    fold_interval: Annotated[PositiveSeconds, option(
        "seconds between folds of the journal into the count tables. A fold rewrites every key that changed "
        "since the last one, and SDK keys are hot, so folding less often does less work; reads and the "
        "forwarder fold first, so they never see stale counts", group="store")] = 5.0
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], option(
        "the least severe log lines written (to stderr); tokens are never logged", group="logs", flag=True)] = "INFO"
    log_format: Annotated[Literal["text", "json"], option(
        "`text`: one human-readable line per event. `json`: one JSON object per line with the keys `time`, "
        "`level`, `logger`, `process`, `message` and `exception` (null without one). Either way tokens, "
        "SDK keys and upstream secrets are redacted", group="logs", flag=True)] = "text"
    event_loop: Annotated[Literal["uvloop", "asyncio"], option(
        "the asyncio event loop: `uvloop` (libuv) spends less CPU per request and per awaited commit than the "
        "standard loop (bench/ingest.py measures both); `asyncio` is the fallback for platforms without "
        "uvloop", group="processes")] = "uvloop"
    workers: Annotated[int, option(
        "processes taking ingest: this one (the primary, which does everything else) plus `workers` - 1 ingest "
        "workers on the same port (SO_REUSEPORT), each committing to its own journal file that the primary "
        "folds ([workers.md](workers.md)). 2 uses both cores of a 2-core machine",
        group="processes", flag=True, ge=1, le=16)] = 1
    max_db_size: Annotated[int, option(
        "bound in bytes on the SQLite database and its `-wal` file together (SQLite enforces the database's "
        "part with max_page_count; an eighth, at most 64 MiB, is the `-wal` file's share); ingest is refused, or "
        "makes room (`overflow_policy`), at a high-water mark 10 % below it, and the rest is reserved so that "
        "every acknowledged count can still be folded", group="store", ge=64 * 1024)] = 1024**3
    overflow_policy: Annotated[Literal["refuse", "drop_oldest"], option(
        "a full store: `refuse` answers ingest 503 + `Retry-After` (SDKs keep their counts); `drop_oldest` "
        "deletes the oldest stored hour (its undelivered counts and its hourly history) until the new counts "
        "fit, and counts every dropped count in `metrics_proxy_dropped_counts_total{reason=\"overflow_drop_oldest\"}` "
        "([durability.md](durability.md#a-bounded-store-max_db_size-overflow_policy))",
        group="store")] = "refuse"
    disk_reserve: Annotated[Annotated[int, msgspec.Meta(ge=0)] | None, option(
        "bytes held on `data_dir`'s filesystem in `data_dir/disk-reserve`, a file of allocated blocks. When that "
        "filesystem is full (other files, a small volume, a `-wal` grown behind a slow reader) the file is given "
        "back, so that folds and forwarding can still free space; new ingest is refused while less than this is "
        "free, and the file is allocated again once twice this is free. Unset: `max_db_size` / 8, at most 64 MiB; "
        "0: no reserve ([durability.md](durability.md))", group="store", example=67108864)] = None
    idempotency_window: Annotated[PositiveSeconds, option(
        "seconds a bulk post's `Idempotency-Key` is remembered: a repeat within it is answered 202 and not "
        "counted again ([chaining.md](chaining.md))", group="store")] = 24 * 3600.0
    custom_metrics_ttl: Annotated[PositiveSeconds, option(
        "custom metrics (`POST /api/client/metrics/custom`): seconds after which a series that was not "
        "updated disappears", group="extras")] = 3600.0
    custom_metrics_max_series: Annotated[int, option(
        "most custom-metric series kept; a post that would add more gets 400", group="extras", ge=1)] = 10_000
    impact_metrics_max_series: Annotated[int, option(
        "most impact-metric series (environment, app, name, labels) kept; samples of new series beyond it are "
        "dropped and counted, the post's usage counts are still stored", group="extras", ge=1)] = 10_000
    prometheus_max_usage_series: Annotated[int, option(
        "most (appName, toggle) pairs rendered as `feature_toggle_usage_total` on a scrape, busiest first "
        "(`metrics_proxy_usage_series_left_out` counts the rest); 0 leaves the family out",
        group="extras", ge=0)] = 10_000
    token_revalidation_interval: Annotated[PositiveSeconds, option(
        "with an `[upstream]`: a token not listed here is checked once with `POST {upstream}/edge/validate` "
        "(Unleash mounts `/edge` at its root, beside `/api`); the verdict is stored and checked again after this "
        "many seconds", group="extras")] = 3600.0
    retention_hours: Annotated[int, option(
        "hourly counts and flag sightings kept for the read endpoints (raw usage, seen toggles). Pruning never "
        "touches the outbox (counts not yet sent)", group="reads", ge=1)] = 48
    minute_retention_minutes: Annotated[int, option(
        "per-minute counts behind `lastHour` / `lastMinute`", group="reads", ge=2)] = 60
    instance_retention_hours: Annotated[int, option(
        "SDK instances kept; an app disappears with its last instance", group="reads", ge=1)] = 48
    prune_interval: Annotated[PositiveSeconds, option(
        "seconds between pruning passes; with an upstream, the outbox is never pruned", group="reads")] = 60.0
    read_cache_max_bytes: Annotated[int, option(
        "bytes of encoded read answers kept for repeated reads until a fold or pruning changes the data or the "
        "clock moves their window (plain and gzip variants together, gzip for answers of 2 KiB and more; least "
        "recently used first out); 0 turns the cache off", group="reads", ge=0)] = 32 * 1024 * 1024
    read_cache_max_entries: Annotated[int, option(
        "cached read answers", group="reads", ge=1)] = 1000
    read_max_flags: Annotated[int, option(
        "most flags one list of a read answer names (an app's seen flags, seen-apps' flags, each feature-toggles "
        "window), the first by name; a list cut short says how many there were. Unleash lists only flags it "
        "defines, at most its featureFlags limit (5,000 by default), so an SDK reporting made-up names cannot "
        "grow an answer, or the memory building it, past this", group="reads", ge=1)] = 5000
    read_max_answer_bytes: Annotated[int, option(
        "most bytes of a seen-toggles or seen-apps answer, the two whose size is apps x flags: they list apps "
        "(flags) in name order while they fit, and a header says how many there are. The default keeps any such "
        "answer, with its gzip copy, within the default read cache", group="reads", ge=1024)] = 24 * 1024 * 1024
    max_connections: Annotated[int, option(
        "connections held on the TCP port, per process: a new one beyond them closes the oldest idle "
        "connection, or is answered 503 and closed when every held one is busy with a request. 0: what the "
        "descriptor limit (RLIMIT_NOFILE, whose soft limit is raised to the hard one at start) leaves after a "
        "reserve for the database files, the upstream client and the ingest workers' connections "
        "([connections.md](connections.md))", group="processes", ge=0)] = 0
    request_header_timeout: Annotated[PositiveSeconds, option(
        "seconds a new connection has to send its first request's complete headers, else it is closed "
        "(slowloris clients, and clients that connect and send nothing)", group="processes")] = 10.0
    keepalive_timeout: Annotated[PositiveSeconds, option(
        "seconds an idle keep-alive connection stays open between requests (the next request's headers must "
        "be complete within it too)", group="processes")] = 75.0
    rate_limit_per_token: Annotated[float, option(
        "requests per second one presented token may make, sustained (the requests of every SDK that shares "
        "the token together); beyond it: 429 with `Retry-After`. 0: no limit", group="limits", ge=0)] = 0.0
    rate_limit_per_address: Annotated[float, option(
        "requests per second one client address may make, sustained; beyond it: 429 with `Retry-After`. "
        "0: no limit", group="limits", ge=0)] = 0.0
    rate_limit_burst_seconds: Annotated[float, option(
        "how far ahead of its rate a token or address may go: each may send this many seconds' worth of "
        "requests at once (at least one request). Health, readiness and metrics are never limited; the limits "
        "hold per process", group="limits", gt=0)] = 10.0
    upstream: Annotated[UpstreamSettings | None, option(
        "absent (the default): standalone, nothing is sent. Present: counts are forwarded "
        "([forwarding.md](forwarding.md))")] = None
    features_file: Annotated[str | None, option(
        "without an `[upstream]`: a client features document (JSON, as Unleash's `/api/client/features` "
        "answers) served to SDKs, reloaded when it changes. Ignored with an `[upstream]`",
        group="features", example="features.json")] = None
    features_refresh_interval: Annotated[PositiveSeconds, option(
        "seconds between polls of `{upstream.url}/client/features` (and checks of `features_file`)",
        group="features")] = 10.0
    status: Annotated[StatusSettings, option(
        "what turns the operator status `degraded` ([status.md](status.md))")] = msgspec.field(
        default_factory=StatusSettings)
    launchdarkly: Annotated[LaunchDarklySettings, option(
        "LaunchDarkly's metrics and metric-groups API ([launchdarkly.md](launchdarkly.md))")] = msgspec.field(
        default_factory=LaunchDarklySettings)

    @property
    def database_path(self) -> Path:
        return Path(self.data_dir) / "metrics-proxy.db"

    @property
    def disk_reserve_bytes(self) -> int:
        """disk_reserve as set, or its default derived from max_db_size."""
        if self.disk_reserve is not None:
            return self.disk_reserve
        return min(DEFAULT_DISK_RESERVE_MAX, self.max_db_size // DISK_RESERVE_DIVISOR)

    def shard_path(self, worker_index: int) -> Path:
        """The journal file ingest worker `worker_index` (1..workers-1) alone writes."""
        return Path(self.data_dir) / f"ingest-{worker_index}.db"


def _unwrap(tp: Any) -> Any:
    """The type behind a field's metadata."""
    return tp.type if isinstance(tp, msgspec.inspect.Metadata) else tp


def tables(struct: type[msgspec.Struct] | None = None) -> dict[str, type[msgspec.Struct]]:
    """The nested tables of Settings (`[upstream]`, ...): option name -> its Struct."""
    found = {}
    for f in msgspec.inspect.type_info(struct or Settings).fields:
        tp = _unwrap(f.type)
        for alt in tp.types if isinstance(tp, msgspec.inspect.UnionType) else (tp,):
            if isinstance(alt, msgspec.inspect.StructType):
                found[f.name] = alt.cls
    return found


def _env_value(key: str, tp: Any, raw: str) -> Any:
    """A variable's text as the option's shape: lists comma-separated, tables `key=value` pairs."""
    tp = _unwrap(tp)
    if isinstance(tp, msgspec.inspect.ListType):
        return [item.strip() for item in raw.split(",") if item.strip()]
    if isinstance(tp, msgspec.inspect.DictType):
        if isinstance(_unwrap(tp.value_type), msgspec.inspect.StructType):  # tables by name: JSON
            try:
                return json.loads(raw)
            except ValueError:
                raise ConfigError(f"invalid option {key}: expected a JSON object of tables") from None
        return _parse_env_mapping(key, raw)
    return raw


def _parse_env_mapping(name: str, raw: str) -> dict[str, str]:
    """`development=tok1,production=tok2` -> {"development": "tok1", ...}"""
    result: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"invalid option {name}: expected key=value pairs separated by commas")
        result[key.strip()] = value.strip()
    return result


def options_from_env(environ: os._Environ[str] | dict[str, str]) -> dict[str, Any]:
    """Read METRICS_PROXY_* variables into the nested shape of the TOML file. A table's options are
    METRICS_PROXY_<TABLE>_<OPTION>; setting any of them creates the table."""
    top = {f.name: f.type for f in msgspec.inspect.type_info(Settings).fields}
    nested = {
        table: {f.name: f.type for f in msgspec.inspect.type_info(cls).fields} for table, cls in tables().items()
    }
    options: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name == "config":
            continue
        table = next((t for t in nested if name.startswith(t + "_") and name[len(t) + 1:] in nested[t]), None)
        if table is not None:
            sub = name[len(table) + 1:]
            options.setdefault(table, {})[sub] = _env_value(key, nested[table][sub], raw)
        else:
            options[name] = _env_value(key, top[name], raw) if name in top else raw
    return options


def options_from_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def merge_options(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` over `base`, table by table (an option set in both takes override's value)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_options(merged[key], value)
        else:
            merged[key] = value
    return merged


def _explain(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    message, _, where = text.partition(" - at `$.")
    if where:
        option = where.rstrip("`")
        return f"invalid option {option}: {message}"
    if "unknown field" in text:
        field = text.split("`")[1]
        return f"unknown option {field} ({message.split(' - ')[0]})"
    if "missing required field" in text:
        return f"missing option {text.split('`')[1]} ({text})"
    return f"invalid configuration: {text}"


def load_settings(
    config_file: str | None = None,
    flags: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build Settings with precedence flag > env > file > default. Raises ConfigError."""
    environ = dict(os.environ) if environ is None else environ
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG")
    options: dict[str, Any] = {}
    if config_file:
        options = options_from_file(config_file)
    options = merge_options(options, options_from_env(environ))
    options = merge_options(options, {k: v for k, v in (flags or {}).items() if v is not None})
    try:
        settings = msgspec.convert(options, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc)) from None
    if settings.upstream is not None and not settings.upstream.url.startswith(("http://", "https://")):
        raise ConfigError(f"invalid option upstream.url: {settings.upstream.url!r} is not an http(s) URL")
    api_url = settings.launchdarkly.api_url
    if api_url is not None and not api_url.startswith(("http://", "https://")):
        raise ConfigError(f"invalid option launchdarkly.api_url: {api_url!r} is not an http(s) URL")
    if bool(api_url) != bool(settings.launchdarkly.api_token):
        raise ConfigError("invalid option launchdarkly: api_url and api_token go together (give both or neither)")
    _check_launchdarkly_events(settings.launchdarkly)
    return settings


def _check_launchdarkly_events(ld: LaunchDarklySettings) -> None:
    if ld.events_url is not None and not ld.events_url.startswith(("http://", "https://")):
        raise ConfigError(f"invalid option launchdarkly.events_url: {ld.events_url!r} is not an http(s) URL")
    seen: dict[str, str] = {}
    for name, env in ld.environments.items():
        for field in ("sdk_key", "mobile_key", "client_side_id"):
            value = getattr(env, field)
            if value is None:
                continue
            if not value.strip():
                raise ConfigError(f"invalid option launchdarkly.environments.{name}.{field}: empty")
            if value in seen:
                # Never the value itself: it may be a key.
                raise ConfigError(f"invalid option launchdarkly.environments.{name}.{field}: the same credential "
                                  f"is also {seen[value]}")
            seen[value] = f"launchdarkly.environments.{name}.{field}"


def flag_options() -> list[str]:
    """The options `serve` takes as flags (`--data-dir` for data_dir): those whose metadata says so."""
    return [f.name for f in msgspec.inspect.type_info(Settings).fields
            if isinstance(f.type, msgspec.inspect.Metadata) and (f.type.extra or {}).get("flag")]


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings for a command whose parsed arguments carry `--config` and any of the flag options."""
    flags = {name: getattr(args, name, None) for name in flag_options()}
    return load_settings(config_file=args.config, flags=flags)
