"""Fill the services table (003) from the text the dashboard keeps in devices.services.

The dashboard writes the port lines of a device's scan report there, joined by
newlines ("22/tcp open ssh OpenSSH 8.9p1", "Port 80: http"). Older imports and
hand edits also left JSON lists ('["22/tcp open ssh"]' or
'[{"port": 22, "protocol": "tcp", "service": "ssh"}]') and comma-separated
lists ("22/tcp, 80/tcp") and markdown table rows. NULL, empty text and anything without a port number
are skipped: the devices row keeps its text either way, so nothing is lost.
"""

import json
import re

_PORT_PROTO = re.compile(
    r"(?<![\w.])(\d{1,5})\s*/\s*(tcp|udp|sctp)\b"
    r"(?:\s+(open\|filtered|open|closed|filtered|unfiltered))?"
    r"(?:\s+([A-Za-z][\w.+-]*))?(?:[ \t]+([^\n]*))?",
    re.IGNORECASE)
_PORT_WORD = re.compile(
    r"\bport\s+(\d{1,5})(?:\s*/\s*(tcp|udp|sctp))?(?:[\s:(),=*-]+([A-Za-z][\w.+-]*))?",
    re.IGNORECASE)


def _clean(value):
    value = (value or "").strip().strip("*|`").strip()
    return value or None


def _entry(port, protocol, state, service, version):
    try:
        port = int(port)
    except (TypeError, ValueError):
        return None
    protocol = (protocol or "tcp").lower()
    if not 1 <= port <= 65535 or protocol not in ("tcp", "udp", "sctp"):
        return None
    return (port, protocol, _clean(state), _clean(service), _clean(version))


def _from_line(line):
    line = line.replace("|", " ")  # a markdown table row
    found = [_entry(m[1], m[2], m[3], m[4], m[5]) for m in _PORT_PROTO.finditer(line)]
    if not found:
        found = [_entry(m[1], m[2], None, m[3], None) for m in _PORT_WORD.finditer(line)]
    return [e for e in found if e]


def _from_json(value):
    items = value if isinstance(value, list) else [value]
    entries = []
    for item in items:
        if isinstance(item, dict):
            entry = _entry(item.get("port", item.get("portid")),
                           item.get("protocol", item.get("proto")), item.get("state"),
                           item.get("service", item.get("name")),
                           item.get("version", item.get("product")))
            entries += [entry] if entry else []
        elif isinstance(item, (str, int)) and not isinstance(item, bool):
            text = str(item)
            entries += _from_line(text if "/" in text or not text.isdigit() else text + "/tcp")
    return entries


def parse_services(text):
    """(port, protocol, state, service, version) for each port named in ``text``."""
    if not isinstance(text, str) or not text.strip():
        return []
    stripped = text.strip()
    if stripped[0] in "[{":
        try:
            return _from_json(json.loads(stripped))
        except ValueError:
            pass  # not JSON after all: read it as lines
    entries = []
    for line in stripped.splitlines():
        pieces = line.split(",") if len(_PORT_PROTO.findall(line)) > 1 else [line]
        for piece in pieces:
            entries += _from_line(piece)
    return entries


def _wanted(conn):
    rows = {}
    for ip, text, first_seen, last_seen in conn.execute(
            "SELECT ip, services, first_seen, last_seen FROM devices ORDER BY id"):
        for port, protocol, state, service, version in parse_services(text):
            rows.setdefault((ip, port, protocol),
                            (ip, port, protocol, state, service, version, first_seen, last_seen))
    return rows


def up(conn):
    conn.executemany(
        "INSERT OR IGNORE INTO services (device_ip, port, protocol, state, service, version, "
        "first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", list(_wanted(conn).values()))


def down(conn):
    conn.execute("DELETE FROM services")


def validate(conn):
    """Every port the text names has its row."""
    have = set(conn.execute("SELECT device_ip, port, protocol FROM services"))
    return set(_wanted(conn)) <= have
