-- The seed's asks, additive on top of the application's schema: a normalised
-- services table (one row per port a device exposes; 004 fills it from the
-- devices.services text the dashboard writes) and the indexes its queries
-- need (migrations/queries.sql): service ports and names, the dashboard's
-- page view (devices by last_seen, then ip) and a scan's changes.
-- Scan history is the application's scans table and device changes its
-- network_changes table (002); IP lookups, device status and last-seen
-- already have the application's own indexes (001).
-- services is keyed by the device's IP, not devices.id: the dashboard writes
-- devices with INSERT OR REPLACE, which deletes the row and inserts it again
-- under a new id, but the same ip; a child row keyed by id would be orphaned
-- on every scan import. No ON DELETE action, so that a REPLACE on a
-- connection with foreign keys on cannot cascade into services.

-- migrate:up
CREATE TABLE services (
    id INTEGER PRIMARY KEY,
    device_ip TEXT NOT NULL REFERENCES devices(ip),
    port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    protocol TEXT NOT NULL DEFAULT 'tcp' CHECK (protocol IN ('tcp', 'udp', 'sctp')),
    state TEXT,
    service TEXT,
    version TEXT,
    first_seen TEXT,
    last_seen TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (device_ip, port, protocol)
);
-- Which devices expose a port; which run a service.
CREATE INDEX idx_services_port ON services(port, protocol);
CREATE INDEX idx_services_service ON services(service);
-- The dashboard's page view: SELECT * FROM devices ORDER BY last_seen DESC, ip ASC.
CREATE INDEX idx_devices_last_seen_ip ON devices(last_seen DESC, ip);
-- The changes one scan found (and the foreign-key check of network_changes).
CREATE INDEX idx_changes_scan ON network_changes(scan_id);

-- migrate:down
DROP INDEX idx_changes_scan;
DROP INDEX idx_devices_last_seen_ip;
DROP INDEX idx_services_service;
DROP INDEX idx_services_port;
DROP TABLE services;
