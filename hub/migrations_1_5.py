"""The hub database's schema versions 1 to 5: the counting tables, the dashboard's summaries and
logins, segments.

``hub/store.py`` applies these and those of ``hub/migrations_6_on.py`` in order. Released
entries are never edited, so that every hub reaches the same schema whatever version it starts
from; new ones are appended in ``hub/migrations_6_on.py``.
"""

MIGRATIONS_1_5: list[str] = [
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
]
