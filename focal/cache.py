"""A persistent key -> JSON store on SQLite (WAL); every put is committed at once.

Used for judgments, rollouts and generated rubrics, so that a rerun or a restart
after a crash repeats no call that already succeeded.

    cache = Cache("cache/judge.sqlite"); cache.put(key, {"a": 1}); cache.get(key)
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path


def content_key(*parts) -> str:
    """A stable hash of JSON-serialisable parts."""
    blob = json.dumps(parts, ensure_ascii=False, sort_keys=True, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    return hashlib.sha256(blob.encode()).hexdigest()


class Cache:
    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # TRL awaits async rewards on its own event-loop thread: the connection is shared across threads,
        # one statement at a time
        self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self.lock = threading.Lock()
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value TEXT)")
        self.db.commit()

    def get(self, key: str):
        with self.lock:
            row = self.db.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?)", (key, json.dumps(value, ensure_ascii=False)))
            self.db.commit()

    def count(self) -> int:
        with self.lock:
            return self.db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def close(self) -> None:
        self.db.close()
