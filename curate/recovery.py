"""After a crash: photos in shards that were renamed complete but not yet marked done get marked done.

A photo becomes `done` only in the shard writer's commit callback, after its shard is renamed
into place; a kill between that rename and the catalog update leaves the photo `pending` in a
complete shard. On start, the shards that may hold such photos (`ShardWriter.recover`) are read
back and those photos marked done, so a re-run neither loses nor repeats them.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from facesift.shards.writer import ShardWriter

log = logging.getLogger(__name__)


def photos_in_shard(path: Path) -> dict[str, str | None]:
    """{photo_id: sha256} of the faces stored in one shard (from the json members)."""
    from facesift.shards.reader import DamagedShard, iter_samples  # only loaded when recovering

    out: dict[str, str | None] = {}
    try:
        for sample in iter_samples(str(path), extensions={"json"}):
            meta = json.loads(sample["json"])
            out[str(meta["photo_id"])] = meta.get("sha256")
    except DamagedShard as exc:
        # what lies past the damage is unreadable for every reader too: those photos stay
        # pending and are curated again into a new shard
        log.warning("damaged shard %s: %s; %d photos read before the damage are recovered", path, exc, len(out))
    return out


def reconcile(writer: ShardWriter, catalog) -> int:
    """Mark done the photos found in complete shards whose catalog row is still pending."""
    updates = []
    for shard in writer.recover():
        for pid, sha in photos_in_shard(shard).items():
            row = catalog.get(pid)
            if row is not None and row["status"] == "pending":
                updates.append((pid, "done", None, sha))
    if updates:
        catalog.set_status_many(updates)
        log.info("recovered %d photos from shards completed by an interrupted run", len(updates))
    return len(updates)
