-- Brings the dashboard's own schema (001) to the shape nMapping+'s installer
-- creates (install_dashboard_enhanced.sh): scans.scan_duration, the
-- network_changes audit trail (one row per new, modified or disappeared
-- device, with the scan that saw it) and the installer's indexes. Additive
-- only: every statement the dashboard issues keeps working. A database the
-- installer made is adopted at this version (the comparison does not look at
-- column order: ALTER TABLE appends scan_duration, the installer has it
-- before created_at). The installer's WAL setting is the database's own
-- (backups record it, restores put it back); its 'init' scan row is data.
-- No down section on purpose: on a database the installer made these are the
-- application's own tables and rows; reverting would drop them. Restore a
-- backup to go back before this.

-- migrate:up
ALTER TABLE scans ADD COLUMN scan_duration INTEGER;
CREATE INDEX idx_devices_mac ON devices(mac);
CREATE INDEX idx_devices_hostname ON devices(hostname);
CREATE INDEX idx_scans_date ON scans(scan_date);
CREATE INDEX idx_scans_type ON scans(scan_type);
CREATE TABLE network_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_ip TEXT NOT NULL,
    change_type TEXT NOT NULL, -- 'new', 'modified', 'disappeared'
    change_description TEXT,
    old_value TEXT,
    new_value TEXT,
    scan_id INTEGER,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (scan_id) REFERENCES scans(id)
);
CREATE INDEX idx_changes_device ON network_changes(device_ip);
CREATE INDEX idx_changes_type ON network_changes(change_type);
CREATE INDEX idx_changes_date ON network_changes(created_at);
