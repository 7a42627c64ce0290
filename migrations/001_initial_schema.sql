-- nMapping+'s schema exactly as the dashboard's own start-up code creates it
-- (dashboard_app.py: init_database() and process_scan_summaries()): the same
-- names, types, defaults and index names, so that 'migrate up' on a database
-- the dashboard already made adopts it (the live schema is compared with this
-- one first), and a database made here is the one the dashboard expects.
-- Timestamps are whatever the scanner wrote (text); created_at/updated_at
-- come from CURRENT_TIMESTAMP ('YYYY-MM-DD HH:MM:SS', UTC).
-- No down section on purpose: these are the application's own tables (it
-- creates them itself when they are missing); reverting would drop its data.
-- To go back before this, restore a backup.

-- migrate:up
CREATE TABLE devices (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                ip TEXT UNIQUE NOT NULL,
                mac TEXT,
                vendor TEXT,
                hostname TEXT,
                first_seen TEXT,
                last_seen TEXT,
                status TEXT DEFAULT 'unknown',
                os_info TEXT,
                services TEXT,
                vulnerabilities TEXT,
                notes TEXT,
                created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
            );
CREATE INDEX idx_devices_ip ON devices(ip);
CREATE INDEX idx_devices_status ON devices(status);
CREATE INDEX idx_devices_last_seen ON devices(last_seen);
CREATE TABLE scans (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                scan_type TEXT NOT NULL,
                scan_date TEXT NOT NULL,
                devices_found INTEGER DEFAULT 0,
                new_devices INTEGER DEFAULT 0,
                scan_file TEXT,
                created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                UNIQUE(scan_type, scan_date)
            );

-- migrate:validate
SELECT count(*) = 2 FROM sqlite_master WHERE type = 'table' AND name IN ('devices', 'scans');
