"""The hub's SQLite database: schema, versioned migrations, and opening it right.

One file per store (``hub.db``), WAL mode so the dashboard reads while ingest writes.
Times are UNIX seconds (REAL, UTC); ``day``/``hour`` columns are in the store's local time
zone, computed once at write time, because every footfall report is by local day and hour.

Tables (the contract between ingest, metrics, the dashboard and sync):

- ``sensor_visits``: one row per visit message as a sensor published it (unique key: start
  time and message id, which makes replays and QoS-1 duplicates harmless).
- ``visits``: store visits. One device seen by several sensors in overlapping or adjacent
  visits is one store visit; ``best_sensor``/``best_rssi`` say which sensor (zone) saw it
  strongest. ``device_key`` is the device estimator's id (see ``hub/devices.py``): every
  metric counts ``device_key``, never raw hashes, because MAC randomization inflates
  distinct-hash counts many times over.
- ``devices``: one row per ``device_key``: first/last seen, visit count, total dwell,
  ``excluded`` (staff and fixed equipment: left out of every metric by default).
- ``sensors``: health from status/last-will messages, heartbeats and health reports.
- ``presence``: the sensors' periodic live counts.
- ``hourly``: aggregates by local day, hour and zone; raw visits older than the retention
  window are rolled up here before deletion, so totals survive retention.
- ``ingest_rejects``: counts of rejected messages by reason (garbage, schema, unknown sensor).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

# Each entry migrates from version i to i+1. Never edit a released entry: append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE sensor_visits (
        id TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        sensor TEXT NOT NULL,
        device TEXT NOT NULL,
        randomized INTEGER NOT NULL,
        partner_hash TEXT,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        dwell_s REAL NOT NULL,
        inside_s REAL NOT NULL,
        sightings INTEGER NOT NULL,
        rssi_max INTEGER,
        rssi_mean REAL,
        class TEXT NOT NULL,
        long_stay INTEGER NOT NULL,
        fingerprint TEXT NOT NULL,
        ie_ids TEXT NOT NULL,
        seq_first INTEGER,
        seq_last INTEGER,
        channels TEXT,
        ssid_hashes TEXT,
        burst_gap_s REAL,
        received REAL NOT NULL,
        visit_id INTEGER
    );
    CREATE INDEX sensor_visits_device ON sensor_visits(device, first_seen);
    CREATE INDEX sensor_visits_first_seen ON sensor_visits(first_seen);

    CREATE TABLE visits (
        id INTEGER PRIMARY KEY,
        site TEXT NOT NULL,
        device TEXT NOT NULL,
        device_key TEXT NOT NULL,
        randomized INTEGER NOT NULL,
        partner_hash TEXT,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        dwell_s REAL NOT NULL,
        inside_s REAL NOT NULL,
        class TEXT NOT NULL,
        long_stay INTEGER NOT NULL,
        excluded INTEGER NOT NULL DEFAULT 0,
        best_sensor TEXT NOT NULL,
        best_rssi INTEGER,
        sensors TEXT NOT NULL,
        n_sensor_visits INTEGER NOT NULL,
        day TEXT NOT NULL,
        hour INTEGER NOT NULL
    );
    CREATE INDEX visits_first_seen ON visits(first_seen);
    CREATE INDEX visits_day ON visits(day, hour);
    CREATE INDEX visits_device_key ON visits(device_key, first_seen);
    CREATE INDEX visits_device ON visits(device, last_seen);

    CREATE TABLE devices (
        device_key TEXT PRIMARY KEY,
        randomized INTEGER NOT NULL,
        partner_hash TEXT,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        visit_count INTEGER NOT NULL,
        total_dwell_s REAL NOT NULL,
        excluded INTEGER NOT NULL DEFAULT 0,
        excluded_reason TEXT
    );

    CREATE TABLE sensors (
        site TEXT NOT NULL,
        sensor TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'unknown',
        version TEXT,
        online_since REAL,
        offline_since REAL,
        last_message REAL,
        messages INTEGER NOT NULL DEFAULT 0,
        message_rate REAL,
        backlog INTEGER,
        dropped INTEGER,
        health TEXT,
        PRIMARY KEY (site, sensor)
    );

    CREATE TABLE presence (
        site TEXT NOT NULL,
        sensor TEXT NOT NULL,
        ts REAL NOT NULL,
        devices INTEGER NOT NULL,
        inside INTEGER NOT NULL,
        PRIMARY KEY (site, sensor, ts)
    );

    CREATE TABLE hourly (
        site TEXT NOT NULL,
        day TEXT NOT NULL,
        hour INTEGER NOT NULL,
        zone TEXT NOT NULL,
        visitors INTEGER NOT NULL,
        passersby INTEGER NOT NULL,
        dwell_s_sum REAL NOT NULL,
        new_visitors INTEGER NOT NULL,
        returning_visitors INTEGER NOT NULL,
        rolled_up INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (site, day, hour, zone)
    );

    CREATE TABLE ingest_rejects (
        reason TEXT PRIMARY KEY,
        count INTEGER NOT NULL,
        last_at REAL NOT NULL,
        last_detail TEXT
    );
    """,
    # 2: dashboard. Per-day summary tables, so that every dashboard query reads a few
    # thousand rows instead of millions. They are derived data, rebuilt from ``visits`` by
    # ``summaries.refresh_summaries`` (the dashboard server runs it every few seconds) and
    # never written by ingest, which therefore pays nothing for them. ``summary_days``
    # records each summarized day with a fingerprint of its raw visits, so that late or
    # changed visits are noticed and the day recomputed. ``visitor_days`` has one row per
    # device, day and staff flag with a visitor visit; its ``prev_day`` and ``days_30``
    # (distinct visit days in the 30 days to this day) make new vs returning, unique
    # visitors over any period and visit frequency sums over small per-day tables.
    # Then the login tables (users, server-side sessions, API keys; secrets only hashed).
    """
    CREATE TABLE summary_days (
        day TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        refreshed REAL NOT NULL,
        frozen INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE agg_hour (
        day TEXT NOT NULL, hour INTEGER NOT NULL, zone TEXT NOT NULL, class TEXT NOT NULL,
        excl INTEGER NOT NULL, visits INTEGER NOT NULL, dwell_s REAL NOT NULL,
        PRIMARY KEY (day, hour, zone, class, excl)
    ) WITHOUT ROWID;
    CREATE TABLE agg_dwell (
        day TEXT NOT NULL, zone TEXT NOT NULL, class TEXT NOT NULL, excl INTEGER NOT NULL,
        bin INTEGER NOT NULL, visits INTEGER NOT NULL, dwell_s REAL NOT NULL,
        PRIMARY KEY (day, zone, class, excl, bin)
    ) WITHOUT ROWID;
    CREATE TABLE visitor_days (
        device_key TEXT NOT NULL, excl INTEGER NOT NULL, day TEXT NOT NULL,
        visits INTEGER NOT NULL, dwell_s REAL NOT NULL, prev_day TEXT, days_30 INTEGER NOT NULL,
        PRIMARY KEY (device_key, excl, day)
    ) WITHOUT ROWID;
    CREATE INDEX visitor_days_day ON visitor_days(day);
    CREATE TABLE agg_gap (
        day TEXT NOT NULL, excl INTEGER NOT NULL, gap INTEGER NOT NULL, visitors INTEGER NOT NULL,
        PRIMARY KEY (day, excl, gap)
    ) WITHOUT ROWID;
    CREATE TABLE agg_freq (
        day TEXT NOT NULL, excl INTEGER NOT NULL, days_30 INTEGER NOT NULL, visitors INTEGER NOT NULL,
        PRIMARY KEY (day, excl, days_30)
    ) WITHOUT ROWID;
    CREATE INDEX presence_ts ON presence(ts);

    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created REAL NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created REAL NOT NULL,
        expires REAL NOT NULL
    );
    CREATE INDEX sessions_user ON sessions(user_id);
    CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        revoked REAL
    );
    """,
    # segments (hub/segments.py): rule-based and behavioural-cluster segments of device keys,
    # their current members and their sizes over time (what coupons, partners and sync read).
    """
    CREATE TABLE segments (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('rule', 'cluster')),
        definition TEXT,
        dynamic INTEGER NOT NULL DEFAULT 1,
        profile TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE segment_members (
        segment_id INTEGER NOT NULL REFERENCES segments(id) ON DELETE CASCADE,
        device_key TEXT NOT NULL,
        since REAL NOT NULL,
        PRIMARY KEY (segment_id, device_key)
    ) WITHOUT ROWID;
    CREATE INDEX segment_members_device ON segment_members(device_key);
    CREATE TABLE segment_counts (
        segment_id INTEGER NOT NULL REFERENCES segments(id) ON DELETE CASCADE,
        ts REAL NOT NULL,
        members INTEGER NOT NULL,
        PRIMARY KEY (segment_id, ts)
    ) WITHOUT ROWID;
    """,
    # ingest and merge (hub/ingest.py, hub/merge.py): merging reads a store visit's sensor
    # visits; ingest reads the (few) excluded devices every batch; ``status_ts`` is the ``ts``
    # of the sensor's last status message (a last will's is its registration time);
    # ``first_visitor_day`` (local day of the device's first visitor visit, kept by ingest)
    # answers new vs returning even after retention deleted the raw visits.
    """
    CREATE INDEX sensor_visits_visit ON sensor_visits(visit_id);
    CREATE INDEX devices_excluded ON devices(device_key) WHERE excluded = 1;
    ALTER TABLE sensors ADD COLUMN status_ts REAL;
    ALTER TABLE devices ADD COLUMN first_visitor_day TEXT;
    """,
    # dashboard, continued (hub/metrics.py): per-day rows so that year-long reports read a
    # few hundred rows. ``agg_day``: ``agg_hour`` without the hour. ``agg_prev``: visitor-days
    # by day and previous visit day ('' = first visit ever) with a running total ``cum`` in
    # ``prev_day`` order, so unique visitors of any period are one index seek per day (a
    # device's first day in the period is the one whose previous visit is before the period).
    # ``agg_loyalty_day``: the day's new/returning, days-since-last-visit and frequency counts.
    """
    CREATE TABLE agg_day (
        day TEXT NOT NULL, zone TEXT NOT NULL, class TEXT NOT NULL, excl INTEGER NOT NULL,
        visits INTEGER NOT NULL, dwell_s REAL NOT NULL,
        PRIMARY KEY (day, zone, class, excl)
    ) WITHOUT ROWID;
    CREATE TABLE agg_prev (
        day TEXT NOT NULL, excl INTEGER NOT NULL, prev_day TEXT NOT NULL,
        visitors INTEGER NOT NULL, cum INTEGER NOT NULL,
        PRIMARY KEY (day, excl, prev_day)
    ) WITHOUT ROWID;
    CREATE TABLE agg_loyalty_day (
        day TEXT NOT NULL, excl INTEGER NOT NULL, visitor_days INTEGER NOT NULL, new INTEGER NOT NULL,
        gap_1 INTEGER NOT NULL, gap_2_7 INTEGER NOT NULL, gap_8_30 INTEGER NOT NULL, gap_31_90 INTEGER NOT NULL,
        gap_91 INTEGER NOT NULL, daily INTEGER NOT NULL, weekly INTEGER NOT NULL, occasional INTEGER NOT NULL,
        PRIMARY KEY (day, excl)
    ) WITHOUT ROWID;
    INSERT INTO agg_day SELECT day, zone, class, excl, sum(visits), sum(dwell_s) FROM agg_hour GROUP BY 1, 2, 3, 4;
    INSERT INTO agg_prev
    SELECT day, excl, prev, visitors, sum(visitors) OVER (PARTITION BY day, excl ORDER BY prev)
    FROM (SELECT day, excl, coalesce(prev_day, '') AS prev, count(*) AS visitors
          FROM visitor_days WHERE visits > 0 GROUP BY 1, 2, 3);
    INSERT INTO agg_loyalty_day
    SELECT day, excl, count(*), count(*) - count(gap), total(gap = 1), total(gap BETWEEN 2 AND 7),
        total(gap BETWEEN 8 AND 30), total(gap BETWEEN 31 AND 90), total(gap > 90),
        total(days_30 >= 15), total(days_30 BETWEEN 4 AND 14), total(days_30 <= 3)
    FROM (SELECT day, excl, days_30, CAST(julianday(day) - julianday(prev_day) AS INTEGER) AS gap
          FROM visitor_days WHERE visits > 0)
    GROUP BY 1, 2;
    """,
    # O2O retargeting (hub/o2o/): scenarios and their runs; per-device targets (the work queue:
    # a target stays ``pending`` until the partner really answered, so a partner outage never
    # marks anything sent); coupons and POS redemptions; consent and the stop-list; the
    # ad-platform segment rows and their exports/share links; the data transfer register.
    """
    CREATE TABLE o2o_scenarios (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        enabled INTEGER NOT NULL DEFAULT 1,
        config TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        next_run REAL,
        watermark REAL
    );
    CREATE TABLE o2o_runs (
        id INTEGER PRIMARY KEY,
        scenario_id INTEGER NOT NULL REFERENCES o2o_scenarios(id),
        started REAL NOT NULL,
        finished REAL,
        now REAL NOT NULL,
        status TEXT NOT NULL,
        window_from REAL, window_to REAL,
        candidates INTEGER NOT NULL DEFAULT 0, eligible INTEGER NOT NULL DEFAULT 0,
        control INTEGER NOT NULL DEFAULT 0, capped INTEGER NOT NULL DEFAULT 0,
        opted_out INTEGER NOT NULL DEFAULT 0, deferred INTEGER NOT NULL DEFAULT 0,
        sent_to_partner INTEGER NOT NULL DEFAULT 0, matched INTEGER NOT NULL DEFAULT 0,
        messageable INTEGER NOT NULL DEFAULT 0, blocked INTEGER NOT NULL DEFAULT 0,
        messaged INTEGER NOT NULL DEFAULT 0, coupons INTEGER NOT NULL DEFAULT 0,
        segment_rows INTEGER NOT NULL DEFAULT 0, exported_rows INTEGER NOT NULL DEFAULT 0,
        error TEXT
    );
    CREATE INDEX o2o_runs_scenario ON o2o_runs(scenario_id, started);
    CREATE TABLE o2o_targets (
        id INTEGER PRIMARY KEY,
        scenario_id INTEGER NOT NULL REFERENCES o2o_scenarios(id),
        run_id INTEGER NOT NULL,
        partner_hash TEXT NOT NULL,
        device_key TEXT NOT NULL,
        visit_at REAL NOT NULL,
        assigned_at REAL NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        sent_at REAL,
        known INTEGER, messageable INTEGER, phone_md5 TEXT, matched_at REAL,
        coupon_code TEXT, message_id TEXT, messaged_at REAL,
        updated REAL NOT NULL
    );
    CREATE INDEX o2o_targets_scenario ON o2o_targets(scenario_id, status);
    CREATE INDEX o2o_targets_hash ON o2o_targets(partner_hash, assigned_at);
    CREATE INDEX o2o_targets_device ON o2o_targets(device_key);
    CREATE TABLE o2o_coupons (
        code TEXT PRIMARY KEY,
        scenario_id INTEGER, campaign TEXT, target_id INTEGER,
        device_key TEXT, partner_hash TEXT,
        kind TEXT NOT NULL CHECK (kind IN ('percent', 'fixed')),
        value REAL NOT NULL,
        min_purchase REAL NOT NULL DEFAULT 0,
        valid_from REAL NOT NULL, valid_until REAL NOT NULL,
        stores TEXT,
        issued_at REAL NOT NULL,
        redeemed_at REAL, redeemed_store TEXT, receipt_id TEXT, amount REAL, discount REAL
    );
    CREATE INDEX o2o_coupons_scenario ON o2o_coupons(scenario_id, issued_at);
    CREATE TABLE o2o_redemptions (
        id INTEGER PRIMARY KEY,
        code TEXT NOT NULL REFERENCES o2o_coupons(code),
        store TEXT NOT NULL, receipt_id TEXT, amount REAL NOT NULL, discount REAL NOT NULL,
        at REAL NOT NULL, cancelled_at REAL, cancel_reason TEXT
    );
    CREATE INDEX o2o_redemptions_code ON o2o_redemptions(code);
    CREATE TABLE o2o_pos_keys (
        id INTEGER PRIMARY KEY,
        store TEXT NOT NULL,
        prefix TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        revoked REAL
    );
    CREATE TABLE o2o_consent (
        subject TEXT NOT NULL, channel TEXT NOT NULL, category TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('granted', 'withdrawn', 'unsubscribed')),
        updated REAL NOT NULL,
        PRIMARY KEY (subject, channel, category)
    ) WITHOUT ROWID;
    CREATE TABLE o2o_stoplist (subject TEXT PRIMARY KEY, reason TEXT, added REAL NOT NULL) WITHOUT ROWID;
    CREATE TABLE o2o_segment_rows (
        id INTEGER PRIMARY KEY,
        scenario_id INTEGER NOT NULL, target_id INTEGER NOT NULL,
        mac_md5 TEXT NOT NULL, msisdn_md5 TEXT,
        added REAL NOT NULL, export_id INTEGER
    );
    CREATE INDEX o2o_segment_rows_pending ON o2o_segment_rows(scenario_id, export_id);
    CREATE TABLE o2o_exports (
        id INTEGER PRIMARY KEY,
        scenario_id INTEGER NOT NULL, run_id INTEGER,
        created REAL NOT NULL,
        files TEXT NOT NULL,
        rows INTEGER NOT NULL,
        link_hash TEXT UNIQUE, link_expires REAL, link_status TEXT NOT NULL
    );
    CREATE TABLE o2o_transfers (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        recipient TEXT NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        scenario_id INTEGER, run_id INTEGER,
        count INTEGER NOT NULL,
        status TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX o2o_transfers_at ON o2o_transfers(at);
    """,
    # cloud sync (cloud_sync/outbox.py, sender.py, pushback.py): the outbox of records for the
    # central service (one pending row per kind and key, so re-enqueueing collapses; rows of a
    # formed batch are frozen with its id until the centre acknowledges it, and the batch body
    # is kept byte for byte so a resend after a crash is the same batch); change-detection
    # snapshots; cursors and counters; what the centre pushed back (opt-outs, consents, segment
    # definitions, scenario settings).
    """
    CREATE TABLE sync_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        data TEXT NOT NULL,
        created REAL NOT NULL,
        batch_id TEXT,
        parked REAL,
        park_reason TEXT
    );
    CREATE UNIQUE INDEX sync_outbox_pending ON sync_outbox(kind, key) WHERE batch_id IS NULL AND parked IS NULL;
    CREATE INDEX sync_outbox_batch ON sync_outbox(batch_id) WHERE batch_id IS NOT NULL;
    CREATE TABLE sync_batches (
        batch_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        first_id INTEGER NOT NULL,
        last_id INTEGER NOT NULL,
        records INTEGER NOT NULL,
        body BLOB NOT NULL,
        created REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE TABLE sync_digests (
        kind TEXT NOT NULL, key TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (kind, key)
    ) WITHOUT ROWID;
    CREATE TABLE sync_profile_state (device_key TEXT PRIMARY KEY, state TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE sync_segment_snapshot (
        segment_id INTEGER NOT NULL, device_key TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
        since REAL NOT NULL, PRIMARY KEY (segment_id, device_key)
    ) WITHOUT ROWID;
    CREATE TABLE sync_state (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE sync_counters (name TEXT PRIMARY KEY, count INTEGER NOT NULL, last_at REAL NOT NULL) WITHOUT ROWID;
    CREATE TABLE optouts (device TEXT PRIMARY KEY, ts REAL, received REAL NOT NULL, source TEXT NOT NULL)
        WITHOUT ROWID;
    CREATE TABLE optout_keys (device_key TEXT PRIMARY KEY, device TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE consents (
        device TEXT PRIMARY KEY, granted REAL, withdrawn REAL, source TEXT NOT NULL, updated REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE central_segments (id TEXT PRIMARY KEY, definition TEXT NOT NULL, updated REAL NOT NULL)
        WITHOUT ROWID;
    CREATE TABLE central_scenarios (id TEXT PRIMARY KEY, settings TEXT NOT NULL, updated REAL NOT NULL)
        WITHOUT ROWID;
    """,
    # Every index on a random key is a page rewrite per ingested message. Store visits are
    # grouped by device_key (hub/link.py), so nothing looks them up by MAC hash any more; sensor
    # visits are read by visit_id, never by start time; only an opt-out (rare) finds a device's
    # sensor visits by hash, and a scan is fine for that.
    """
    DROP INDEX IF EXISTS visits_device;
    DROP INDEX IF EXISTS sensor_visits_first_seen;
    DROP INDEX IF EXISTS sensor_visits_device;
    """,
    # The message id is a hash: as the primary key it made every stored message an insert at a
    # random place of an index as large as the table, whose cost grows with the database. A
    # duplicate always has the same start time (the id is derived from it), so the unique key
    # is (first_seen, id): new visits are appended at its end. devices has a random key by
    # nature; WITHOUT ROWID keeps it one b-tree instead of a table plus an index.
    """
    CREATE TABLE sensor_visits_v9 (
        id TEXT NOT NULL,
        site TEXT NOT NULL,
        sensor TEXT NOT NULL,
        device TEXT NOT NULL,
        randomized INTEGER NOT NULL,
        partner_hash TEXT,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        dwell_s REAL NOT NULL,
        inside_s REAL NOT NULL,
        sightings INTEGER NOT NULL,
        rssi_max INTEGER,
        rssi_mean REAL,
        class TEXT NOT NULL,
        long_stay INTEGER NOT NULL,
        fingerprint TEXT NOT NULL,
        ie_ids TEXT NOT NULL,
        seq_first INTEGER,
        seq_last INTEGER,
        channels TEXT,
        ssid_hashes TEXT,
        burst_gap_s REAL,
        received REAL NOT NULL,
        visit_id INTEGER
    );
    INSERT INTO sensor_visits_v9 SELECT
        id, site, sensor, device, randomized, partner_hash, first_seen, last_seen, dwell_s, inside_s, sightings,
        rssi_max, rssi_mean, class, long_stay, fingerprint, ie_ids, seq_first, seq_last, channels, ssid_hashes,
        burst_gap_s, received, visit_id
        FROM sensor_visits ORDER BY first_seen, id;
    DROP TABLE sensor_visits;
    ALTER TABLE sensor_visits_v9 RENAME TO sensor_visits;
    CREATE UNIQUE INDEX sensor_visits_key ON sensor_visits(first_seen, id);
    CREATE INDEX sensor_visits_visit ON sensor_visits(visit_id);

    CREATE TABLE devices_v9 (
        device_key TEXT PRIMARY KEY,
        randomized INTEGER NOT NULL,
        partner_hash TEXT,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        visit_count INTEGER NOT NULL,
        total_dwell_s REAL NOT NULL,
        excluded INTEGER NOT NULL DEFAULT 0,
        excluded_reason TEXT,
        first_visitor_day TEXT
    ) WITHOUT ROWID;
    INSERT INTO devices_v9 SELECT
        device_key, randomized, partner_hash, first_seen, last_seen, visit_count, total_dwell_s, excluded,
        excluded_reason, first_visitor_day
        FROM devices;
    DROP TABLE devices;
    ALTER TABLE devices_v9 RENAME TO devices;
    CREATE INDEX devices_excluded ON devices(device_key) WHERE excluded = 1;
    """,
    # Visit payload version 2 (footfall/schema.py, docs/mqtt.md): the sensor's evidence per
    # burst and per minute, for per-minute occupancy, detection probabilities and linking.
    # ``burst_offsets`` and ``rssi_minutes`` are compact JSON lists; NULL in all three for
    # version 1 visits. Adding nullable columns rewrites no rows: instant on any database.
    """
    ALTER TABLE sensor_visits ADD COLUMN bursts INTEGER;
    ALTER TABLE sensor_visits ADD COLUMN burst_offsets TEXT;
    ALTER TABLE sensor_visits ADD COLUMN rssi_minutes TEXT;
    """,
    # Estimates of people (hub/estimate.py, written by the link job, hub/link.py): per local day
    # (hour -1) and hour, as JSON figures with ranges; the site model each day was estimated
    # with (frozen once fitted on earlier days, so a day's figures do not move with the model);
    # people present per minute (hub/occupancy.py); calibrations against a real count
    # (footfall calibrate counts), the latest of which applies.
    """
    CREATE TABLE estimates (
        day TEXT NOT NULL,
        hour INTEGER NOT NULL,
        figures TEXT NOT NULL,
        watermark REAL NOT NULL,
        computed REAL NOT NULL,
        PRIMARY KEY (day, hour)
    ) WITHOUT ROWID;
    CREATE TABLE site_models (
        day TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        link_model TEXT,
        provisional INTEGER NOT NULL,
        fitted REAL NOT NULL
    );
    CREATE TABLE occupancy (
        minute INTEGER PRIMARY KEY,
        people REAL NOT NULL
    );
    CREATE TABLE calibrations (
        id INTEGER PRIMARY KEY,
        created REAL NOT NULL,
        visitors REAL NOT NULL,
        passersby REAL NOT NULL,
        source TEXT NOT NULL,
        fit TEXT NOT NULL
    );
    """,
    # Ingest's liveness for /metrics, which the dashboard process serves (hub/monitor.py).
    """
    CREATE TABLE hub_status (name TEXT PRIMARY KEY, value REAL NOT NULL, updated REAL NOT NULL) WITHOUT ROWID;
    """,
    # Segment definitions and scenario settings from the centre are versioned; the hub keeps
    # the version it applied (or refused, and why) and reports it back (cloud_sync/definitions.py).
    """
    ALTER TABLE central_segments ADD COLUMN version INTEGER;
    ALTER TABLE central_segments ADD COLUMN status TEXT;
    ALTER TABLE central_segments ADD COLUMN error TEXT;
    ALTER TABLE central_scenarios ADD COLUMN version INTEGER;
    ALTER TABLE central_scenarios ADD COLUMN status TEXT;
    ALTER TABLE central_scenarios ADD COLUMN error TEXT;
    -- Ad exposures imported from an ad platform or media partner, for attribution of exposure
    -- to visits (hub/o2o/exposure.py); subjects keyed like every partner hash at rest.
    CREATE TABLE ad_exposures (
        campaign TEXT NOT NULL, subject TEXT NOT NULL, ts REAL NOT NULL, channel TEXT,
        PRIMARY KEY (campaign, subject, ts)
    ) WITHOUT ROWID;
    """,
    # The phones with a fixed address each day's estimate counted as visitors (written by the
    # link job with the day's estimates): the earlier visits the return rate looks for. The
    # agents' visitor class misses a returning visitor's short earlier visit (hub/link.py).
    """
    CREATE TABLE estimated_visitors (
        device_key TEXT NOT NULL, day TEXT NOT NULL, PRIMARY KEY (device_key, day)
    ) WITHOUT ROWID;
    CREATE INDEX estimated_visitors_day ON estimated_visitors(day);
    """,
]


# The sqlite3 module binds only exact int/float/str/bytearray directly; anything else, None
# included, first goes through its adapter protocol, which raises and catches two
# AttributeErrors when no adapter is registered: ~3,000 instructions per NULL, a tenth of an
# ingested message's SQL. A registered adapter is one dict lookup. Same values bound either way.
sqlite3.register_adapter(type(None), lambda value: value)


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection, *, to: int | None = None) -> int:
    """Bring the database to the newest schema (or version ``to``); returns the version it is at."""
    version = schema_version(conn)
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {version} is newer than this build knows ({len(MIGRATIONS)}); upgrade footfall"
        )
    for target in range(version, len(MIGRATIONS) if to is None else to):
        with conn:
            conn.executescript("BEGIN;" + MIGRATIONS[target] + f"; PRAGMA user_version = {target + 1};")
    return schema_version(conn)


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (and migrate) the hub database with the pragmas every user of it needs."""
    path = Path(path)
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 5000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode is durable against process crashes (kill -9); only an OS crash
        # can lose the last transactions, which the agents' QoS-1 redelivery then restores.
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn)
    return conn


def open_db(path: str | Path) -> sqlite_utils.Database:
    """The same database through sqlite-utils, for code that prefers its table API."""
    return sqlite_utils.Database(connect(path))
