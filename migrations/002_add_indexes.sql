-- Indexes for the dashboard's common queries (migrations/queries.sql; the test
-- suite checks with EXPLAIN QUERY PLAN that each query uses one).
-- Device IP lookups use the index of the UNIQUE (device_ip) constraint from
-- 001, and a device's services that of UNIQUE (device_id, port, protocol):
-- a second index on the same columns would only slow writes down.

-- migrate:up
-- Device type and status: filters and the per-type/per-status counts (covering).
CREATE INDEX idx_devices_type_status ON devices (device_type, status);
-- Devices with a status, most recently seen first.
CREATE INDEX idx_devices_status_last_seen ON devices (status, last_seen DESC);
-- Recently seen / not seen since.
CREATE INDEX idx_devices_last_seen ON devices (last_seen DESC);
-- Which devices expose a port; which run a service.
CREATE INDEX idx_services_port ON services (port, protocol);
CREATE INDEX idx_services_service ON services (service);
-- A device's change history, and the latest changes overall.
CREATE INDEX idx_device_changes_device ON device_changes (device_id, detected_at DESC);
CREATE INDEX idx_device_changes_detected_at ON device_changes (detected_at DESC);
-- The changes of a scan (also keeps ON DELETE SET NULL from scanning the table).
CREATE INDEX idx_device_changes_scan_id ON device_changes (scan_id);
-- The latest scans.
CREATE INDEX idx_scan_history_start_time ON scan_history (start_time DESC);

-- migrate:down
DROP INDEX idx_scan_history_start_time;
DROP INDEX idx_device_changes_scan_id;
DROP INDEX idx_device_changes_detected_at;
DROP INDEX idx_device_changes_device;
DROP INDEX idx_services_service;
DROP INDEX idx_services_port;
DROP INDEX idx_devices_last_seen;
DROP INDEX idx_devices_status_last_seen;
DROP INDEX idx_devices_type_status;
