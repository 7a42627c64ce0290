-- The dashboard's initial schema: devices seen on the network, the services
-- they expose, the scans that found them and the changes between scans.
-- Timestamps are ISO 8601 UTC text ('2024-05-01T12:00:00Z'); JSON columns
-- must hold valid JSON or NULL.

-- migrate:up
CREATE TABLE devices (
    id             INTEGER PRIMARY KEY,
    device_ip      TEXT    NOT NULL UNIQUE,
    hostname       TEXT,
    mac_address    TEXT,
    vendor         TEXT,
    os_detected    TEXT,
    os_confidence  INTEGER CHECK (os_confidence IS NULL OR os_confidence BETWEEN 0 AND 100),
    device_type    TEXT    NOT NULL DEFAULT 'unknown'
                   CHECK (device_type IN ('router', 'switch', 'server', 'workstation',
                                          'printer', 'iot', 'unknown')),
    status         TEXT    NOT NULL DEFAULT 'unknown'
                   CHECK (status IN ('up', 'down', 'unknown')),
    first_seen     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    last_seen      TEXT    NOT NULL,
    scan_count     INTEGER NOT NULL DEFAULT 0 CHECK (scan_count >= 0),
    tags           TEXT    CHECK (tags IS NULL OR json_valid(tags)),
    notes          TEXT,
    created_at     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    updated_at     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);

CREATE TABLE services (
    id          INTEGER PRIMARY KEY,
    device_id   INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    port        INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    protocol    TEXT    NOT NULL DEFAULT 'tcp' CHECK (protocol IN ('tcp', 'udp')),
    service     TEXT,
    version     TEXT,
    product     TEXT,
    state       TEXT    NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed', 'filtered')),
    extra_info  TEXT    CHECK (extra_info IS NULL OR json_valid(extra_info)),
    first_seen  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    last_seen   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    updated_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    UNIQUE (device_id, port, protocol)
);

CREATE TABLE scan_history (
    id                INTEGER PRIMARY KEY,
    scan_id           TEXT    NOT NULL UNIQUE,
    scan_type         TEXT    NOT NULL DEFAULT 'discovery',
    start_time        TEXT    NOT NULL,
    end_time          TEXT    CHECK (end_time IS NULL OR end_time >= start_time),
    duration_seconds  REAL    CHECK (duration_seconds IS NULL OR duration_seconds >= 0),
    subnet            TEXT,
    devices_found     INTEGER NOT NULL DEFAULT 0 CHECK (devices_found >= 0),
    devices_up        INTEGER NOT NULL DEFAULT 0 CHECK (devices_up >= 0),
    devices_down      INTEGER NOT NULL DEFAULT 0 CHECK (devices_down >= 0),
    new_devices       INTEGER NOT NULL DEFAULT 0 CHECK (new_devices >= 0),
    changed_devices   INTEGER NOT NULL DEFAULT 0 CHECK (changed_devices >= 0),
    scanner_version   TEXT,
    metadata          TEXT    CHECK (metadata IS NULL OR json_valid(metadata)),
    created_at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);

CREATE TABLE device_changes (
    id           INTEGER PRIMARY KEY,
    device_id    INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    scan_id      TEXT    REFERENCES scan_history (scan_id) ON DELETE SET NULL,
    change_type  TEXT    NOT NULL,
    old_value    TEXT,
    new_value    TEXT,
    description  TEXT,
    detected_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);

-- Keep updated_at current when a row changes without setting it.
CREATE TRIGGER devices_touch_updated_at
AFTER UPDATE ON devices FOR EACH ROW WHEN NEW.updated_at = OLD.updated_at
BEGIN
    UPDATE devices SET updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') WHERE id = NEW.id;
END;

CREATE TRIGGER services_touch_updated_at
AFTER UPDATE ON services FOR EACH ROW WHEN NEW.updated_at = OLD.updated_at
BEGIN
    UPDATE services SET updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') WHERE id = NEW.id;
END;

-- migrate:down
DROP TRIGGER services_touch_updated_at;
DROP TRIGGER devices_touch_updated_at;
DROP TABLE device_changes;
DROP TABLE services;
DROP TABLE scan_history;
DROP TABLE devices;

-- migrate:validate
SELECT count(*) = 4 FROM sqlite_master
 WHERE type = 'table' AND name IN ('devices', 'services', 'scan_history', 'device_changes');
