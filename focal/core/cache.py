"""A persistent key -> JSON store on SQLite (WAL); every put is committed at once.

Used for judgments, rollouts and generated rubrics, so that a rerun or a restart
after a crash repeats no call that already succeeded.

    cache = Cache("cache/judge.sqlite"); cache.put(key, {"a": 1}); cache.get(key)
    if cache.claim(key, ttl_s=600): ... call, put ...; cache.release(key)   # one caller per key at a time

Claims let several processes share one cache without paying twice for a key: before
calling for a missing key, a caller claims it (one transaction: the claim is taken
only if no other live caller holds it); another caller that finds the key claimed
waits for the answer instead of calling (focal/judging/judge.py). A claim ends when it is
released (after the put, or after a failure), when its `ttl_s` has passed, or when
the process that took it is gone, so a crashed caller blocks nobody for long.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path

from focal.core.watchdog import identity  # the pid's process, if it is alive (this machine's: a local file)


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
        self.db.execute("CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT, pid INTEGER, until REAL)")
        self.db.commit()
        self.owner = secrets.token_hex(8)  # this Cache object: two in one process are two callers

    def get(self, key: str):
        with self.lock:
            row = self.db.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?)", (key, json.dumps(value, ensure_ascii=False)))
            self.db.commit()

    def claim(self, key: str, ttl_s: float) -> bool:
        """Take the key for this caller for ttl_s seconds: True when it was free, already ours, expired, or held by
        a process that is gone; False when another live caller holds it (it is calling for that key now)."""
        now = time.time()
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")  # the check and the take are one transaction across processes
            try:
                row = self.db.execute("SELECT owner, pid, until FROM claims WHERE key = ?", (key,)).fetchone()
                if row is not None and row[0] != self.owner and row[2] > now and identity(row[1]) is not None:
                    return False
                self.db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?)",
                                (key, self.owner, os.getpid(), now + ttl_s))
                return True
            finally:
                self.db.commit()

    def release(self, key: str) -> None:
        """End this caller's claim on key (another caller's claim is left alone)."""
        with self.lock:
            self.db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))
            self.db.commit()

    def count(self) -> int:
        with self.lock:
            return self.db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def close(self) -> None:
        self.db.close()
