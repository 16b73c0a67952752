"""Make a plain SQLite database safe for several worker processes, without the user's help.

WAL lets readers and one writer work at once; a busy timeout makes a writer wait for the lock
instead of failing; IMMEDIATE transactions take the write lock when they begin, so a transaction
never has to upgrade a read lock, which SQLite refuses at once with "database is locked".
"""

from __future__ import annotations

from typing import Any

BUSY_TIMEOUT_MS = 30_000


def configure(sender: Any, connection: Any, **kwargs: Any) -> None:
    """``connection_created`` receiver; leaves anything the user set in OPTIONS alone."""
    if connection.vendor != "sqlite":
        return
    options = connection.settings_dict.get("OPTIONS", {})
    with connection.cursor() as cursor:
        if not connection.is_in_memory_db():
            cursor.execute("PRAGMA journal_mode=WAL")
        if "timeout" not in options:
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    if options.get("transaction_mode") is None:
        connection.transaction_mode = "IMMEDIATE"
