"""Rebuild a lost or broken state store from what the model store knows was trained.

The state store's observations (file listings, cells) can always be recomputed from the sources
(one full scan: the cost of one tick). What was trained cannot: without it every partition would
look never trained and the next tick would request a full retrain. The model store's manifest
records, for every current sub-model, the fingerprint, rows, definition and run it was trained
with: :func:`rebuild_trained` writes those back. Partitions that were skipped (no model) are
requested once more and skip again; nothing that has a current model is retrained. The tick
counter continues after the last tick that logged requests (``last_seq``): Dagster drops a run
request whose run key a run already has, so restarting the numbering would drop real changes.
"""

from __future__ import annotations

import time
from pathlib import Path

from retrain_plugins.changes.state import StateStore
from retrain_plugins.store import ModelStore


def rebuild_trained(state: StateStore, models: ModelStore, last_seq: int) -> int:
    """Record every current sub-model of ``models`` as trained in ``state``, number its ticks
    after ``last_seq``; return how many sub-models."""
    entries = models.entries()
    with state.transaction():
        state.advance_seq(last_seq)
        for key, entry in entries.items():
            state.record_trained(
                key,
                entry["fingerprint"],
                int(entry.get("rows") or 0),
                "trained",
                entry.get("run_id"),
                entry.get("definition", ""),
                entry.get("training_seconds"),
                trained_at=entry.get("created_at"),
            )
    return len(entries)


def rebuild_state(path: Path, models: ModelStore, last_seq: int) -> tuple[int, Path | None]:
    """Move a state store aside (if there is one), start a new one, rebuild what was trained.

    Returns:
        (sub-models recorded, where the old file was moved, or None).
    """
    path = Path(path)
    moved = None
    if path.exists():
        moved = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        path.replace(moved)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.replace(moved.with_name(moved.name + suffix))
    return rebuild_trained(StateStore(path), models, last_seq), moved
