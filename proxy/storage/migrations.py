"""Versioned schema. `PRAGMA user_version` holds how many migrations have run; each runs once, in
its own transaction, so a database written by an older release opens and upgrades in place.
Append new migrations; never edit one that has shipped."""

from __future__ import annotations

import logging
import sqlite3

from proxy.storage.transaction import write_transaction

log = logging.getLogger(__name__)

MIGRATIONS: list[str] = [
    # 1: the ingest core. The journal holds acknowledged requests not yet folded into the tables;
    # hourly_counts is the history the read endpoints use; pending_counts is the outbox.
    """
    CREATE TABLE journal (
        id INTEGER PRIMARY KEY,
        entry BLOB NOT NULL
    );
    CREATE TABLE hourly_counts (
        environment TEXT NOT NULL,
        app_name TEXT NOT NULL,
        feature_name TEXT NOT NULL,
        hour INTEGER NOT NULL,
        yes INTEGER NOT NULL,
        no INTEGER NOT NULL,
        variants TEXT,
        PRIMARY KEY (environment, app_name, feature_name, hour)
    ) WITHOUT ROWID;
    CREATE INDEX hourly_counts_by_feature ON hourly_counts (feature_name, hour);
    CREATE INDEX hourly_counts_by_hour ON hourly_counts (hour);
    CREATE TABLE pending_counts (
        environment TEXT NOT NULL,
        app_name TEXT NOT NULL,
        feature_name TEXT NOT NULL,
        hour INTEGER NOT NULL,
        yes INTEGER NOT NULL,
        no INTEGER NOT NULL,
        variants TEXT,
        PRIMARY KEY (environment, app_name, feature_name, hour)
    ) WITHOUT ROWID;
    CREATE TABLE instances (
        app_name TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        environment TEXT NOT NULL,
        sdk_version TEXT,
        strategies TEXT,
        interval REAL,
        started TEXT,
        client_ip TEXT,
        projects TEXT,
        created_at REAL NOT NULL,
        last_seen REAL NOT NULL,
        PRIMARY KEY (app_name, instance_id, environment)
    ) WITHOUT ROWID;
    CREATE INDEX instances_by_last_seen ON instances (last_seen);
    """,
    # 2: what the read endpoints need beyond hourly history: per-minute counts for the sliding
    # last-minute / last-hour windows, and first/last seen per app and flag.
    """
    CREATE TABLE minute_counts (
        environment TEXT NOT NULL,
        app_name TEXT NOT NULL,
        feature_name TEXT NOT NULL,
        minute INTEGER NOT NULL,
        yes INTEGER NOT NULL,
        no INTEGER NOT NULL,
        PRIMARY KEY (environment, app_name, feature_name, minute)
    ) WITHOUT ROWID;
    CREATE INDEX minute_counts_by_minute ON minute_counts (minute);
    CREATE TABLE flag_seen (
        environment TEXT NOT NULL,
        app_name TEXT NOT NULL,
        feature_name TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        PRIMARY KEY (environment, app_name, feature_name)
    ) WITHOUT ROWID;
    CREATE INDEX flag_seen_by_last_seen ON flag_seen (last_seen);
    """,
    # 3: the upstream outbox: pending counts are cut into persisted batches (one batch = one
    # request body, its id is the Idempotency-Key) before they are sent, so a crash mid-send
    # resends the same batch; rejected items are kept in dead_letters, not dropped silently.
    """
    CREATE TABLE outbox_batches (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        environment TEXT NOT NULL,
        created REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX outbox_batches_by_env ON outbox_batches (environment, created, seq);
    CREATE TABLE outbox_items (
        batch_seq INTEGER NOT NULL REFERENCES outbox_batches (seq),
        position INTEGER NOT NULL,
        kind TEXT NOT NULL,
        item TEXT NOT NULL,
        yes INTEGER NOT NULL DEFAULT 0,
        no INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (batch_seq, position)
    ) WITHOUT ROWID;
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY,
        environment TEXT NOT NULL,
        kind TEXT NOT NULL,
        item TEXT NOT NULL,
        yes INTEGER NOT NULL DEFAULT 0,
        no INTEGER NOT NULL DEFAULT 0,
        status INTEGER,
        reason TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE forwarder_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 4: Idempotency-Key of bulk posts from chained proxies, written in the journal append's
    # transaction; pruned by seen_at once older than idempotency_window. No index on seen_at:
    # the hourly prune scans a table of a day's keys, cheaper than an index insert per post.
    """
    CREATE TABLE idempotency_keys (
        environment TEXT NOT NULL,
        key TEXT NOT NULL,
        seen_at REAL NOT NULL,
        PRIMARY KEY (environment, key)
    ) WITHOUT ROWID;
    """,
    # 5: all-time usage per app and flag for feature_toggle_usage_total (a scrape reads it
    # instead of summing every hour), the latest value of each custom-metric series and the ones
    # not yet forwarded, tokens checked with the upstream, and a row the readiness probe rewrites.
    """
    CREATE TABLE usage_totals (
        app_name TEXT NOT NULL,
        feature_name TEXT NOT NULL,
        yes INTEGER NOT NULL,
        no INTEGER NOT NULL,
        PRIMARY KEY (app_name, feature_name)
    ) WITHOUT ROWID;
    INSERT INTO usage_totals (app_name, feature_name, yes, no)
        SELECT app_name, feature_name, sum(yes), sum(no) FROM hourly_counts GROUP BY 1, 2;
    CREATE TABLE custom_metrics (
        name TEXT NOT NULL,
        labels TEXT NOT NULL,
        value REAL NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (name, labels)
    ) WITHOUT ROWID;
    CREATE INDEX custom_metrics_by_updated ON custom_metrics (updated);
    CREATE TABLE pending_custom_metrics (
        name TEXT NOT NULL,
        labels TEXT NOT NULL,
        value REAL NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (name, labels)
    ) WITHOUT ROWID;
    CREATE TABLE upstream_tokens (
        token TEXT PRIMARY KEY, -- SHA-256 hex of the token, never the token
        kind TEXT,
        environment TEXT,
        checked REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE readiness_probe (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        padding BLOB
    );
    CREATE TABLE impact_metrics (
        environment TEXT NOT NULL,
        app_name TEXT NOT NULL,
        name TEXT NOT NULL,
        labels TEXT NOT NULL,
        row BLOB NOT NULL,
        PRIMARY KEY (environment, app_name, name, labels)
    ) WITHOUT ROWID;
    CREATE TABLE pending_impact_metrics (
        environment TEXT NOT NULL,
        app_name TEXT NOT NULL,
        name TEXT NOT NULL,
        labels TEXT NOT NULL,
        row BLOB NOT NULL,
        PRIMARY KEY (environment, app_name, name, labels)
    ) WITHOUT ROWID;
    """,
    # 6: the last good client features document per environment, so an offline proxy keeps
    # serving flag definitions across restarts. confirmed_at: when the upstream last vouched for it.
    """
    CREATE TABLE feature_documents (
        environment TEXT PRIMARY KEY,
        document BLOB NOT NULL,
        upstream_etag TEXT,
        confirmed_at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 7: the read endpoints look flags up per application (seen toggles, app details, overview);
    # flag_seen's key starts with the environment, so that lookup needs its own index. Per-minute
    # totals by flag and by app serve the sliding windows without summing minute_counts
    # (minute_rollups.py); an upgraded database fills them from the minute_counts it has.
    """
    CREATE INDEX flag_seen_by_app ON flag_seen (app_name, feature_name);
    CREATE TABLE minute_flag_totals (
        feature_name TEXT NOT NULL,
        minute INTEGER NOT NULL,
        yes INTEGER NOT NULL,
        no INTEGER NOT NULL,
        PRIMARY KEY (feature_name, minute)
    ) WITHOUT ROWID;
    CREATE INDEX minute_flag_totals_by_minute ON minute_flag_totals (minute);
    CREATE TABLE minute_app_totals (
        app_name TEXT NOT NULL,
        minute INTEGER NOT NULL,
        yes INTEGER NOT NULL,
        no INTEGER NOT NULL,
        PRIMARY KEY (app_name, minute)
    ) WITHOUT ROWID;
    CREATE INDEX minute_app_totals_by_minute ON minute_app_totals (minute);
    INSERT INTO minute_flag_totals (feature_name, minute, yes, no)
        SELECT feature_name, minute, sum(yes), sum(no) FROM minute_counts GROUP BY feature_name, minute;
    INSERT INTO minute_app_totals (app_name, minute, yes, no)
        SELECT app_name, minute, sum(yes), sum(no) FROM minute_counts GROUP BY app_name, minute;
    """,
    # 8: with ingest workers, the last journal id of each worker's journal file (shard) folded
    # into this database, written in the fold's transaction: a shard row counts iff its id is
    # above its shard's mark (proxy/storage/shards/reader.py).
    """
    CREATE TABLE shard_watermarks (
        shard TEXT PRIMARY KEY,
        last_id INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 9: a large fold's count deltas, staged in the transaction that drops their journal rows and
    # then written into the tables a chunk per transaction (proxy/storage/usage/staging.py).
    """
    CREATE TABLE fold_staging (
        seq INTEGER PRIMARY KEY,
        chunk BLOB NOT NULL
    );
    """,
    # 10: the LaunchDarkly room (proxy/launchdarkly/store/): metrics with every version kept (GET
    # ?versionId=), metric groups and the metrics each uses (a used metric cannot be deleted), the
    # projects asked about (refreshed from an upstream). The outbox and its dead letters say whose
    # they are: Unleash's forwarder and LaunchDarkly's write queue share the tables, each reads its own.
    """
    CREATE TABLE ld_metrics (
        project TEXT NOT NULL,
        key TEXT NOT NULL,
        doc TEXT NOT NULL,
        version_id TEXT NOT NULL,
        PRIMARY KEY (project, key)
    ) WITHOUT ROWID;
    CREATE TABLE ld_metric_versions (
        project TEXT NOT NULL,
        key TEXT NOT NULL,
        version_id TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (project, key, version_id)
    ) WITHOUT ROWID;
    CREATE TABLE ld_metric_groups (
        project TEXT NOT NULL,
        key TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (project, key)
    ) WITHOUT ROWID;
    CREATE TABLE ld_group_metrics (
        project TEXT NOT NULL,
        metric_key TEXT NOT NULL,
        group_key TEXT NOT NULL,
        PRIMARY KEY (project, metric_key, group_key)
    ) WITHOUT ROWID;
    CREATE TABLE ld_projects (
        project TEXT PRIMARY KEY,
        refreshed REAL
    ) WITHOUT ROWID;
    ALTER TABLE outbox_batches ADD COLUMN vendor TEXT NOT NULL DEFAULT 'unleash';
    ALTER TABLE dead_letters ADD COLUMN vendor TEXT NOT NULL DEFAULT 'unleash';
    """,
    # 11: LaunchDarkly's SDK events: payloads kept whole by the fold until the vendor's cut moves them
    # into outbox batches (proxy/storage/payloads.py), and custom events counted per metric and hour.
    """
    CREATE TABLE inbound_payloads (
        id INTEGER PRIMARY KEY,
        vendor TEXT NOT NULL,
        stream TEXT NOT NULL,
        meta BLOB NOT NULL,
        body BLOB NOT NULL
    );
    CREATE TABLE ld_metric_events (
        project TEXT NOT NULL,
        metric_key TEXT NOT NULL,
        environment TEXT NOT NULL,
        hour INTEGER NOT NULL,
        count INTEGER NOT NULL,
        value_sum REAL NOT NULL,
        PRIMARY KEY (project, metric_key, environment, hour)
    ) WITHOUT ROWID;
    """,
]

LATEST = len(MIGRATIONS)


class MigrationError(Exception):
    pass


def schema_version(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: sqlite3.Connection, target: int = LATEST) -> int:
    """Bring the schema up to `target`; returns the version found before."""
    found = schema_version(db)
    if found > LATEST:
        raise MigrationError(
            f"database schema version {found} is newer than this release understands ({LATEST}); "
            "refusing to touch it"
        )
    for version in range(found + 1, target + 1):
        try:
            with write_transaction(db):
                for statement in MIGRATIONS[version - 1].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {version}")
        except sqlite3.Error as exc:
            raise MigrationError(f"migration {version} failed: {exc}") from exc
        log.info("database schema upgraded to version %d", version)
    return found
