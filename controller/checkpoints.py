"""Where each trainer's agent state is kept between decisions: only the latest, per trainer.

LangGraph's savers keep every checkpoint a thread ever had (the in-memory saver ~32 KB per
decision; SQLite 78 MB after 3,786 decisions in the hardening probe), and neither implements
``prune``. The agent needs only the latest state of each trainer (its lists are bounded by
reducers), so the two savers here implement ``BaseCheckpointSaver.prune(strategy=
"keep_latest")`` and the agent calls it after every decision: memory and file stay
O(trainers), not O(decisions). :class:`StateStore` keeps the latest state of the rule and
classifier path, which runs the graph's steps without LangGraph's engine (``graph.py``).

Our graph has no ``DeltaChannel`` (whose history a keep-latest prune would sever, see the
warning on ``BaseCheckpointSaver.prune``): every channel's value is in the latest checkpoint.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver

PRUNE_STRATEGIES = ("keep_latest", "delete")


def _check_strategy(strategy: str) -> None:
    if strategy not in PRUNE_STRATEGIES:
        raise ValueError(f"prune strategy must be one of {PRUNE_STRATEGIES}, got {strategy!r}")


class PrunedMemorySaver(InMemorySaver):
    """LangGraph's in-memory saver that can drop all but the latest checkpoint of a thread."""

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep only the latest checkpoint per namespace of each thread (or delete them)."""
        _check_strategy(strategy)
        for thread_id in thread_ids:
            if strategy == "delete":
                self.delete_thread(thread_id)
                continue
            for ns, checkpoints in (self.storage.get(thread_id) or {}).items():
                if len(checkpoints) < 2:
                    continue
                latest = max(checkpoints)  # ids are time-ordered (uuid6), as get_tuple reads
                kept = self.serde.loads_typed(checkpoints[latest][0])["channel_versions"]
                for cid in [c for c in checkpoints if c != latest]:
                    # A checkpoint's blobs are those of its channel_versions: drop the ones the
                    # kept checkpoint does not share (a channel unchanged since keeps its blob).
                    old = self.serde.loads_typed(checkpoints.pop(cid)[0])["channel_versions"]
                    for channel, version in old.items():
                        if kept.get(channel) != version:
                            self.blobs.pop((thread_id, ns, channel, version), None)
                    self.writes.pop((thread_id, ns, cid), None)


class PrunedSqliteSaver(SqliteSaver):
    """LangGraph's SQLite saver that can drop all but the latest checkpoint of a thread."""

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep only the latest checkpoint per namespace of each thread (or delete them)."""
        _check_strategy(strategy)
        if strategy == "delete":
            for thread_id in thread_ids:
                self.delete_thread(thread_id)
            return
        with self.cursor() as cur:
            for thread_id in thread_ids:
                cur.execute(
                    "SELECT checkpoint_ns, MAX(checkpoint_id) FROM checkpoints "
                    "WHERE thread_id = ? GROUP BY checkpoint_ns",
                    (str(thread_id),),
                )
                for ns, latest in cur.fetchall():
                    for table in ("checkpoints", "writes"):  # both keyed by the primary key
                        cur.execute(
                            f"DELETE FROM {table} WHERE thread_id = ? AND checkpoint_ns = ? "
                            "AND checkpoint_id <> ?",
                            (str(thread_id), ns, latest),
                        )


class StateStore:
    """The latest agent state of each thread, one row each, in a table of the checkpoint file.

    For the path that runs the graph's steps without LangGraph's engine (rules, classifiers):
    a state is plain JSON (the graph keeps plain values), replaced in place on every save.
    Thread-safe: decisions for different trainers save from different worker threads.
    """

    TABLE = "rudder_agent_state"

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._lock = threading.Lock()
        with self._lock, conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.TABLE} "
                "(thread_id TEXT PRIMARY KEY, state TEXT NOT NULL)"
            )

    def load(self, thread_id: str) -> dict | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT state FROM {self.TABLE} WHERE thread_id = ?",
                (thread_id,),
            ).fetchone()
        return json.loads(row[0]) if row else None

    def save(self, thread_id: str, state: dict) -> None:
        text = json.dumps(state, default=str)
        with self._lock, self._conn:
            self._conn.execute(
                f"INSERT OR REPLACE INTO {self.TABLE} (thread_id, state) VALUES (?, ?)",
                (thread_id, text),
            )

    def threads(self) -> int:
        with self._lock:
            return self._conn.execute(f"SELECT COUNT(*) FROM {self.TABLE}").fetchone()[0]
