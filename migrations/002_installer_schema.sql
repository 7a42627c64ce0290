-- Brings the dashboard's own schema (001) to the shape nMapping+'s installer
-- creates (install_dashboard_enhanced.sh): scans.scan_duration, the
-- network_changes audit trail (one row per new, modified or disappeared
-- device, with the scan that saw it) and the installer's indexes. Additive
-- only: every statement the dashboard issues keeps working. A database the
-- installer made is adopted at this version (the comparison does not look at
-- column order: ALTER TABLE appends scan_duration, the installer has it
-- before created_at). The installer's WAL setting is the database's own
-- (backups record it, restores put it back); its 'init' scan row is data.

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

-- migrate:down
DROP INDEX idx_changes_date;
DROP INDEX idx_changes_type;
DROP INDEX idx_changes_device;
DROP TABLE network_changes;
DROP INDEX idx_scans_type;
DROP INDEX idx_scans_date;
DROP INDEX idx_devices_hostname;
DROP INDEX idx_devices_mac;
-- Without scan_duration: rebuilt (DROP COLUMN needs SQLite 3.35), as 001 made it.
CREATE TABLE scans_001 (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                scan_type TEXT NOT NULL,
                scan_date TEXT NOT NULL,
                devices_found INTEGER DEFAULT 0,
                new_devices INTEGER DEFAULT 0,
                scan_file TEXT,
                created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                UNIQUE(scan_type, scan_date)
            );
INSERT INTO scans_001 (id, scan_type, scan_date, devices_found, new_devices, scan_file,
                       created_at)
    SELECT id, scan_type, scan_date, devices_found, new_devices, scan_file, created_at
      FROM scans;
DROP TABLE scans;
ALTER TABLE scans_001 RENAME TO scans;
