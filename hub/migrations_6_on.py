"""The hub database's schema versions 6 on: O2O, cloud sync, ingest speed, estimates of people.

``hub/store.py`` applies these after those of ``hub/migrations_1_5.py``. Released entries are
never edited; a new migration is appended here.
"""

MIGRATIONS_6_ON: list[str] = [
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
    # The signatures (a randomizing phone's fingerprint and the hashes of the networks it asks
    # for by name, hashed again) each day's visits heard: the earlier visits the return rate
    # looks for when it follows such a phone across days (hub/returning.py).
    """
    CREATE TABLE network_visits (
        signature TEXT NOT NULL, day TEXT NOT NULL, PRIMARY KEY (signature, day)
    ) WITHOUT ROWID;
    CREATE INDEX network_visits_day ON network_visits(day);
    """,
]
