-- The dashboard's common queries, one per line (lines starting with -- are
-- comments). Literal values stand in for parameters so each line runs as is,
-- e.g. under EXPLAIN QUERY PLAN. The test suite checks that every query is
-- answered through an index once the migrations are applied.
SELECT * FROM devices WHERE device_ip = '192.0.2.10';
SELECT id, device_ip, hostname, status, last_seen FROM devices WHERE device_type = 'server';
SELECT id, device_ip, hostname, device_type FROM devices WHERE device_type = 'router' AND status = 'up';
SELECT device_type, status, count(*) FROM devices GROUP BY device_type, status;
SELECT id, device_ip, hostname, device_type, last_seen FROM devices WHERE status = 'up' ORDER BY last_seen DESC;
SELECT id, device_ip, hostname, status, last_seen FROM devices ORDER BY last_seen DESC LIMIT 50;
SELECT id, device_ip, hostname, last_seen FROM devices WHERE last_seen < '2024-01-01T00:00:00Z';
SELECT d.device_ip, s.protocol, s.service, s.version FROM services AS s JOIN devices AS d ON d.id = s.device_id WHERE s.port = 443;
SELECT device_id, port, protocol, version FROM services WHERE service = 'ssh';
SELECT port, protocol, service, state FROM services WHERE device_id = 1 ORDER BY port;
SELECT change_type, old_value, new_value, detected_at FROM device_changes WHERE device_id = 1 ORDER BY detected_at DESC;
SELECT device_id, change_type, description, detected_at FROM device_changes ORDER BY detected_at DESC LIMIT 100;
SELECT device_id, change_type, old_value, new_value FROM device_changes WHERE scan_id = 'scan-2024-05-01';
SELECT scan_id, scan_type, start_time, devices_found, devices_up FROM scan_history ORDER BY start_time DESC LIMIT 20;
