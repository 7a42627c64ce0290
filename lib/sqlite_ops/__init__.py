"""sqlite-ops: migrations, verified backups, safe restores, maintenance and metrics for SQLite."""

__version__ = "0.1.0"
