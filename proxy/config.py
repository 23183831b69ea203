"""Settings: one msgspec Struct, filled from defaults < TOML file < environment < command-line flags.

Every option has the same name in all three places: `port` in the file, `METRICS_PROXY_PORT` in the
environment, `--port` on the command line; nested tables join with an underscore
(`[upstream] url` is `METRICS_PROXY_UPSTREAM_URL`).
"""

from __future__ import annotations

import argparse
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


class ConfigError(Exception):
    """A bad option: the message is one line that names the option."""


class UpstreamSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str
    # One upstream client token per environment: Unleash binds a client token to one environment
    # and its bulk endpoint silently drops rows of any other.
    tokens: dict[str, str] = {}
    flush_interval: PositiveSeconds = 10.0
    request_timeout: PositiveSeconds = 30.0
    headers: dict[str, str] = {}
    # Sent as UNLEASH-APPNAME; the instance id is generated once and kept in the database.
    app_name: str = "metrics-proxy"
    # Unleash's body parser refuses bodies over 100 kB; stay below it as Unleash Edge does.
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 95 * 1024
    # Bulk bodies go gzip-compressed (Content-Encoding: gzip), which Unleash accepts; max_body_bytes
    # still bounds the uncompressed body, the size Unleash's parser limits.
    compress: bool = True
    max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4  # requests per environment
    # 429/5xx/network: exponential backoff with full jitter from retry_initial up to retry_max;
    # never given up (a time budget would discard the oldest counts in a long outage).
    retry_initial: PositiveSeconds = 1.0
    retry_max: PositiveSeconds = 300.0
    # 401/403/404: the environment pauses (its batches stay) and is tried again after this.
    auth_retry_interval: PositiveSeconds = 300.0
    # On SIGTERM, one last flush may take this long; what is not delivered stays on disk.
    shutdown_flush_timeout: PositiveSeconds = 20.0
    # A known SDK instance is announced upstream again (its last-seen time refreshed) at most this
    # often; new instances go out in the next batch. 0: every instance seen, in every batch.
    instance_refresh_interval: Annotated[float, msgspec.Meta(ge=0)] = 60.0


class LaunchDarklySettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """[launchdarkly]: the metrics and metric-groups REST API (docs/launchdarkly.md)."""

    # With auth = "tokens": the REST access tokens accepted locally, sent raw in Authorization as
    # LaunchDarkly's are (no "Bearer"). With auth = "open" any non-empty token is accepted.
    access_tokens: list[str] = []
    # Metric-group calls without `LD-API-Version: beta` get 403, as LaunchDarkly documents; false
    # accepts them (the official generated clients do not send it by themselves).
    require_beta_header: bool = True
    # The upstream LaunchDarkly, e.g. "https://app.launchdarkly.com", and the access token the
    # proxy uses there. Without both the local store is authoritative.
    api_url: str | None = None
    api_token: str | None = None
    # Seconds between refreshes of every project asked about from the upstream.
    refresh_interval: PositiveSeconds = 60.0
    request_timeout: PositiveSeconds = 10.0
    # Replaying queued writes: the same backoff as [upstream] (full jitter from retry_initial up to
    # retry_max, Retry-After a floor); a 401/403 pauses the queue for auth_retry_interval.
    retry_initial: PositiveSeconds = 1.0
    retry_max: PositiveSeconds = 300.0
    auth_retry_interval: PositiveSeconds = 300.0

    @property
    def upstream(self) -> bool:
        return bool(self.api_url and self.api_token)


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 3063
    data_dir: str = "data"
    auth: Literal["tokens", "open"] = "tokens"
    client_tokens: list[str] = []
    frontend_tokens: list[str] = []
    admin_tokens: list[str] = []
    max_body_size: Annotated[int, msgspec.Meta(ge=1024)] = 1024 * 1024
    # FULL: an acknowledged count survives a process kill and a power cut (one fsync per group
    # commit). NORMAL: survives a process kill, may lose the last commits on power loss.
    # OFF: survives a process kill only, and power loss may corrupt the database.
    synchronous: Literal["FULL", "NORMAL", "OFF"] = "FULL"
    # Seconds between folds of the journal into the count tables. A fold rewrites every key that
    # changed since the last one, and SDK keys are hot, so folding less often does less work;
    # reads and the forwarder fold first, so they never see stale counts.
    fold_interval: PositiveSeconds = 5.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The asyncio event loop implementation. uvloop (libuv) spends less CPU per request and per
    # awaited commit than the standard loop (bench/ingest.py measures both); "asyncio" is the
    # fallback for platforms without uvloop.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # Processes that take ingest: this one (the primary, which does everything else) plus
    # workers - 1 ingest workers on the same port (SO_REUSEPORT), each committing to its own
    # journal file that the primary folds (proxy/workers/). 2 uses both cores of a 2-core box.
    workers: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    # Bound on the SQLite database and its -wal file (SQLite enforces the database's part with
    # max_page_count). Ingest is refused, or makes room (overflow_policy), at a high-water mark
    # below it; see storage/capacity/limits.py.
    max_db_size: Annotated[int, msgspec.Meta(ge=64 * 1024)] = 1024**3
    # When the store is full: "refuse" answers ingest 503 + Retry-After (SDKs keep their counts);
    # "drop_oldest" deletes the oldest undelivered hours and counts every dropped count.
    overflow_policy: Literal["refuse", "drop_oldest"] = "refuse"
    # Bytes held on data_dir's filesystem in a file of allocated blocks (data_dir/disk-reserve) and
    # given back when that filesystem is full, so that folds and forwarding can still free space
    # (storage/capacity/disk_reserve.py). Unset: min(64 MiB, max_db_size / 8), as much as the -wal
    # file's share; 0: no reserve.
    disk_reserve: Annotated[int, msgspec.Meta(ge=0)] | None = None
    # How long a bulk post's Idempotency-Key is remembered (a repeat within it is not re-counted).
    idempotency_window: PositiveSeconds = 24 * 3600.0
    # Custom metrics (POST /api/client/metrics/custom): a series not updated for this long is
    # dropped, and at most this many series are kept (new ones beyond it are refused with 400).
    custom_metrics_ttl: PositiveSeconds = 3600.0
    custom_metrics_max_series: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    # Most impact-metric series (environment, app, name, labels) kept; samples of new series
    # beyond it are dropped and counted, the post's usage counts are still stored.
    impact_metrics_max_series: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    # Most (app, flag) pairs rendered as feature_toggle_usage_total on a scrape (busiest first).
    prometheus_max_usage_series: Annotated[int, msgspec.Meta(ge=0)] = 10_000
    # With an upstream: seconds before a token checked with {upstream}/edge/validate is re-checked.
    token_revalidation_interval: PositiveSeconds = 3600.0
    # History kept for the read endpoints. Pruning never touches the outbox (counts not yet sent).
    retention_hours: Annotated[int, msgspec.Meta(ge=1)] = 48
    minute_retention_minutes: Annotated[int, msgspec.Meta(ge=2)] = 60
    instance_retention_hours: Annotated[int, msgspec.Meta(ge=1)] = 48
    prune_interval: PositiveSeconds = 60.0
    # Encoded read answers kept for repeated reads until the data or their time window changes:
    # at most this many bytes (identity and gzip variants together; 0 keeps none) and entries.
    read_cache_max_bytes: Annotated[int, msgspec.Meta(ge=0)] = 32 * 1024 * 1024
    read_cache_max_entries: Annotated[int, msgspec.Meta(ge=1)] = 1000
    # Most flags one list of a read answer names (an app's seen flags, seen-apps' flags, each
    # feature-toggles window), the first by name; a list cut short says how many there were.
    # Unleash lists only flags it defines, at most its featureFlags limit (5,000 by default), so
    # an SDK reporting made-up names cannot grow an answer, or the memory building it, past this.
    read_max_flags: Annotated[int, msgspec.Meta(ge=1)] = 5000
    # Most bytes of a seen-toggles or seen-apps answer, the two whose size is apps x flags: they
    # list apps (flags) in name order while they fit, and a header says how many there are. The
    # default keeps any such answer, with its gzip copy, within the default read cache.
    read_max_answer_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 24 * 1024 * 1024
    # Connections on the TCP port, per process (docs/connections.md). At most max_connections are
    # held: a new one beyond them closes the oldest idle connection, or is answered 503 and closed
    # when every held one is busy with a request. 0: what the descriptor limit (RLIMIT_NOFILE, whose
    # soft limit is raised to the hard one at start) leaves after a reserve for the database files,
    # the upstream client and the ingest workers' connections.
    max_connections: Annotated[int, msgspec.Meta(ge=0)] = 0
    # Seconds a new connection has to send its first request's headers; then it is closed. Stops
    # slowloris clients, and clients that connect and send nothing, from holding descriptors.
    request_header_timeout: PositiveSeconds = 10.0
    # Seconds an idle keep-alive connection stays open between requests (the next request's
    # headers must be complete within it too).
    keepalive_timeout: PositiveSeconds = 75.0
    upstream: UpstreamSettings | None = None
    # Feature definitions served at /api/client/features when there is no upstream: a client
    # features document (JSON), reloaded when it changes. With an upstream it is ignored.
    features_file: str | None = None
    # Seconds between polls of {upstream}/client/features (and checks of features_file).
    features_refresh_interval: PositiveSeconds = 10.0
    launchdarkly: LaunchDarklySettings = msgspec.field(default_factory=LaunchDarklySettings)

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


def _list_fields() -> set[str]:
    info = msgspec.inspect.type_info(Settings)
    return {f.name for f in info.fields if isinstance(f.type, msgspec.inspect.ListType)}


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
    """Read METRICS_PROXY_* variables into the nested shape of the TOML file."""
    lists = _list_fields()
    upstream_fields = {f.name: f.type for f in msgspec.inspect.type_info(UpstreamSettings).fields}
    ld_fields = {f.name: f.type for f in msgspec.inspect.type_info(LaunchDarklySettings).fields}
    options: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name == "config":
            continue
        if name.startswith("upstream_") and name[len("upstream_"):] in upstream_fields:
            sub = name[len("upstream_"):]
            value: Any = raw
            if isinstance(upstream_fields[sub], msgspec.inspect.DictType):
                value = _parse_env_mapping(key, raw)
            options.setdefault("upstream", {})[sub] = value
        elif name.startswith("launchdarkly_") and name[len("launchdarkly_"):] in ld_fields:
            sub = name[len("launchdarkly_"):]
            value = raw
            if isinstance(ld_fields[sub], msgspec.inspect.ListType):
                value = [item.strip() for item in raw.split(",") if item.strip()]
            options.setdefault("launchdarkly", {})[sub] = value
        elif name in lists:
            options[name] = [item.strip() for item in raw.split(",") if item.strip()]
        else:
            options[name] = raw
    return options


def options_from_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
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
    options = _merge(options, options_from_env(environ))
    options = _merge(options, {k: v for k, v in (flags or {}).items() if v is not None})
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
    return settings


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings for a command whose parsed arguments carry `--config` and any of the flag options."""
    flags = {name: getattr(args, name, None) for name in ("host", "port", "data_dir", "auth", "log_level", "workers")}
    return load_settings(config_file=args.config, flags=flags)
