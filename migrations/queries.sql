-- The dashboard's queries, one per line (lines starting with -- are comments).
-- The first two are the statements nMapping+'s dashboard issues on every page
-- view (dashboard_app.py, get_dashboard_data); the others are the lookups the
-- migrations' indexes exist for (IP, status, last seen, MAC, service ports,
-- scan types, device changes). Literal values stand in for parameters so each
-- line runs as is, e.g. under EXPLAIN QUERY PLAN. The test suite checks that
-- every query is answered through an index once the migrations are applied.
SELECT * FROM devices ORDER BY last_seen DESC, ip ASC;
SELECT * FROM scans ORDER BY scan_date DESC LIMIT 10;
SELECT * FROM devices WHERE ip = '192.0.2.10';
SELECT status, count(*) FROM devices GROUP BY status;
SELECT ip, hostname, last_seen FROM devices WHERE status = 'online';
SELECT ip, hostname, last_seen FROM devices WHERE last_seen < '2024-01-01';
SELECT ip, vendor FROM devices WHERE mac = '00:11:22:33:44:55';
SELECT ip, mac FROM devices WHERE hostname = 'printer.lan';
SELECT device_ip, protocol, service, version FROM services WHERE port = 443;
SELECT device_ip, port, protocol, version FROM services WHERE service = 'ssh';
SELECT port, protocol, service, state FROM services WHERE device_ip = '192.0.2.10' ORDER BY port;
SELECT scan_date, devices_found, new_devices FROM scans WHERE scan_type = 'discovery' ORDER BY scan_date DESC;
SELECT change_type, old_value, new_value, created_at FROM network_changes WHERE device_ip = '192.0.2.10';
SELECT device_ip, change_type, change_description FROM network_changes WHERE change_type = 'new';
SELECT device_ip, change_type, created_at FROM network_changes WHERE created_at >= '2024-05-01' ORDER BY created_at DESC;
SELECT device_ip, change_type, old_value, new_value FROM network_changes WHERE scan_id = 1;
